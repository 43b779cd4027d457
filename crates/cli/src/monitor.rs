//! `lockstep monitor`: a live full-screen view of a running server — its agents with chosen state
//! fields, health, breaker and queue; the sync points, votes, collectives and tick rounds still
//! waiting and who they wait for; system health, message rates and task queues; the data plane
//! (the last round of each series and whom it missed, tick controllers and their idle sources,
//! latency buffers and their provisional share, retained topics); the synced systems of the sync
//! monitor (open incidents in priority order, stale and at-risk systems) — from which an operator
//! pauses, resumes or restarts an agent.
//!
//! Three layers, so that all but the first can be tested without a server or a terminal:
//! * [`Server::snapshot`] reads a [`Snapshot`] (the only I/O besides the operator's actions);
//! * [`Model`] is what the screen shows: [`Model::apply`] folds each snapshot in, and [`on_key`]
//!   changes the view or returns an [`Action`] for the server;
//! * [`draw`] renders a model into a ratatui frame.
//!
//! [`run`] ties them together: one loop that waits for the next refresh or the next key.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use futures::StreamExt;
use lockstep_client::systems::{Incident, Status};
use lockstep_client::{
    proto as v1, AdminClient, AgentFilter, Client, Error, StreamsClient, SystemStatus, SystemsClient,
};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Sparkline, Table, TableState, Wrap};
use ratatui::{DefaultTerminal, Frame};
use serde_json::Value;

use crate::admin::status_name;

/// Where the server is, how to authenticate, what to show and how often.
#[derive(Args)]
pub struct MonitorArgs {
    /// Server address.
    #[arg(long, env = "LOCKSTEP_ADDR", default_value = crate::config::DEFAULT_LISTEN)]
    addr: String,
    /// Namespace (empty: default).
    #[arg(long, short = 'n', default_value = "")]
    namespace: String,
    /// The server's admin token: health, pause, resume and restart are Admin calls.
    #[arg(long, env = "LOCKSTEP_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The Admin API's address, when the server serves it apart (`serve --admin-listen`).
    #[arg(long, env = "LOCKSTEP_ADMIN_ADDR")]
    admin_addr: Option<String>,
    #[command(flatten)]
    tls: crate::admin::TlsArgs,
    /// Top-level fields of each agent's state to show as columns (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "confidence,last_signal,pnl")]
    fields: Vec<String>,
    /// Refresh period in milliseconds; at most 1000, so the view is never more than a second old.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..=1000))]
    interval_ms: u64,
}

/// How long a refresh or an operator's action may take. Keys wait while one is in flight, so a
/// server that stops answering must not freeze the screen for longer than this.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// How many agents' states are read at once during a refresh.
const STATE_READS_IN_FLIGHT: usize = 16;

/// The widest a column of the agent grid grows; longer values are cut.
const MAX_COLUMN_WIDTH: usize = 24;

/// Everything the monitor shows, as read from the server at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Registered agents (those of the monitored namespace).
    pub agents: Vec<v1::AgentInfo>,
    /// Each agent's state by id; an agent that left between the listing and the read is absent.
    pub states: HashMap<String, Value>,
    /// Sync points, waiting and retained.
    pub sync_points: Vec<v1::SyncPointStatus>,
    /// Votes, open and retained (only open ones are shown, beside the waiting sync points).
    pub votes: Vec<v1::VoteRecord>,
    /// Collectives gathering or transferring (shown beside the waiting sync points).
    pub collectives: Vec<v1::CollectiveStatus>,
    /// The Admin `Health` answer, or why there is none (in words, with what to do).
    pub health: Result<v1::HealthResponse, String>,
    /// The server's version, clock and message counters.
    pub info: v1::ServerInfoResponse,
    /// Task queues of the monitored namespace, per type.
    pub task_queues: Vec<v1::TaskQueue>,
    /// Rounds, tick controllers, latency buffers and retained topics of the namespace.
    pub data_plane: DataPlane,
    /// The sync monitor's systems and open incidents, or why they could not be read.
    pub systems: Result<SyncedSystems, String>,
}

/// The sync monitor as read at one moment (it is the whole server's, not the namespace's).
#[derive(Clone, Debug, Default)]
pub struct SyncedSystems {
    /// Active systems, by name.
    pub systems: Vec<SystemStatus>,
    /// Open incidents, most urgent first.
    pub incidents: Vec<Incident>,
    /// When they were read, Unix ms (the incidents' ages are counted from it).
    pub read_at: u64,
}

/// The most lines the synced systems pane takes; what does not fit is counted in its title.
const SYSTEMS_LINES: usize = 8;

/// A system counts as at risk from this propagated risk (the server's default `at_risk_percent`).
const AT_RISK: f64 = 0.3;

/// The data plane of the monitored namespace, as read at one moment.
#[derive(Clone, Debug, Default)]
pub struct DataPlane {
    /// Tick round series, each with its open round (shown beside the waiting sync points).
    pub series: Vec<v1::RoundSeriesInfo>,
    /// The last closed round of each series that has no open one (whom it missed matters).
    pub last_rounds: Vec<v1::RoundInfo>,
    pub tickers: Vec<v1::TickerInfo>,
    pub buffers: Vec<v1::BufferInfo>,
    pub topics: Vec<v1::TopicInfo>,
}

/// How many series' last rounds are read per refresh (the pane shows no more lines than this).
const LAST_ROUNDS_READ: usize = 8;

/// The most lines the data plane pane takes; what does not fit is counted in its title.
const DATA_PLANE_LINES: usize = 8;

/// An agent's health as the Admin API assesses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Degraded,
    Stuck,
    Unhealthy,
    /// Not known: the Health call was refused, or the agent is newer than the assessment.
    Unknown,
}

impl Health {
    fn parse(status: &str) -> Health {
        match status {
            "healthy" => Health::Healthy,
            "degraded" => Health::Degraded,
            "stuck" => Health::Stuck,
            "unhealthy" => Health::Unhealthy,
            _ => Health::Unknown,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Stuck => "stuck",
            Health::Unhealthy => "unhealthy",
            Health::Unknown => "?",
        }
    }

    /// Green is fine, yellow needs a look, red needs action.
    fn color(self) -> Color {
        match self {
            Health::Healthy => Color::Green,
            Health::Degraded | Health::Stuck => Color::Yellow,
            Health::Unhealthy => Color::Red,
            Health::Unknown => Color::Gray,
        }
    }

    /// Higher is worse: sorting by health puts the agents needing attention first.
    fn severity(self) -> u8 {
        match self {
            Health::Unknown => 0,
            Health::Healthy => 1,
            Health::Degraded => 2,
            Health::Stuck => 3,
            Health::Unhealthy => 4,
        }
    }
}

/// One line of the agent grid.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentRow {
    pub id: String,
    pub role: String,
    pub status: String,
    pub health: Health,
    pub breaker: String,
    pub queue_depth: u64,
    /// The chosen state fields' values, in the order of the fields ("-" where absent).
    pub fields: Vec<String>,
}

impl AgentRow {
    /// Whether the operator's filter (already lower-case) matches the id, role or status.
    fn matches(&self, filter: &str) -> bool {
        [&self.id, &self.role, &self.status].iter().any(|text| text.to_lowercase().contains(filter))
    }
}

/// A sync point still waiting.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncRow {
    pub id: String,
    pub arrived: usize,
    pub required: u32,
    /// Required participants not arrived yet (empty for "any N" points, which name nobody).
    pub missing: Vec<String>,
    pub waiting_ms: u64,
}

impl SyncRow {
    fn missing_text(&self) -> String {
        if self.missing.is_empty() {
            format!("{} more", (self.required as usize).saturating_sub(self.arrived))
        } else {
            self.missing.join(", ")
        }
    }
}

/// The system's health: the latest score, the counts behind it and its recent history.
#[derive(Clone, Debug, PartialEq)]
pub struct SystemHealth {
    /// Healthy agents / all agents, 0.0 to 1.0.
    pub score: f64,
    pub healthy: u64,
    pub degraded: u64,
    pub stuck: u64,
    pub unhealthy: u64,
    /// Scores, oldest first.
    pub history: Vec<f64>,
}

/// Messages per second, from two successive readings of the server's counters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    pub published: f64,
    pub delivered: f64,
    pub dropped: f64,
}

/// A reading of the server's message counters, at the server's clock.
#[derive(Clone, Copy, Debug)]
struct Counters {
    at_ms: u64,
    published: u64,
    delivered: u64,
    dropped: u64,
}

impl Counters {
    fn of(info: &v1::ServerInfoResponse) -> Counters {
        Counters { at_ms: info.now_ms, published: info.published, delivered: info.delivered, dropped: info.dropped }
    }

    /// The rates since `earlier`; none when no time passed or a counter went back (the server
    /// restarted between the readings).
    fn rates_since(&self, earlier: &Counters) -> Option<Rates> {
        let seconds = self.at_ms.checked_sub(earlier.at_ms).filter(|&ms| ms > 0)? as f64 / 1000.0;
        let per_second = |now: u64, before: u64| now.checked_sub(before).map(|n| n as f64 / seconds);
        Some(Rates {
            published: per_second(self.published, earlier.published)?,
            delivered: per_second(self.delivered, earlier.delivered)?,
            dropped: per_second(self.dropped, earlier.dropped)?,
        })
    }
}

/// The column the agent grid is sorted by; `s` moves to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortColumn {
    Id,
    Status,
    /// Worst first.
    Health,
    /// Deepest first.
    Queue,
}

impl SortColumn {
    fn next(self) -> SortColumn {
        match self {
            SortColumn::Id => SortColumn::Status,
            SortColumn::Status => SortColumn::Health,
            SortColumn::Health => SortColumn::Queue,
            SortColumn::Queue => SortColumn::Id,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SortColumn::Id => "id",
            SortColumn::Status => "status",
            SortColumn::Health => "health",
            SortColumn::Queue => "queue",
        }
    }
}

/// What a key asks of the server (or of the monitor itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Quit,
    Pause(String),
    Resume(String),
    /// Close the agent's circuit breaker and forget its failures.
    Restart(String),
}

/// The status line: the answer to the operator's last action, or a hint.
#[derive(Clone, Debug, PartialEq)]
struct Notice {
    text: String,
    error: bool,
}

/// Everything the screen shows, and the operator's choices (selection, sort, filter).
pub struct Model {
    /// "lockstep 0.1.0 at ADDR, namespace N".
    title: String,
    /// The state fields shown as columns.
    fields: Vec<String>,
    agents: Vec<AgentRow>,
    sync_points: Vec<SyncRow>,
    /// The system's health, or why it is unknown.
    health: Result<SystemHealth, String>,
    rates: Option<Rates>,
    /// Task queues per type, with the age of their oldest ready task.
    task_queues: Vec<v1::TaskQueue>,
    /// The data plane pane's lines, each with its colour (worst news first).
    data_plane: Vec<(String, Color)>,
    /// The synced systems pane's lines, each with its colour (open incidents first).
    systems: Vec<(String, Color)>,
    last_counters: Option<Counters>,
    /// The selected agent, by id so that it stays selected while rows move. An action only ever
    /// targets an agent the operator picked and can see: when it leaves or is filtered out,
    /// nothing is selected.
    selected: Option<String>,
    sort: SortColumn,
    /// The applied filter, lower-case ("" shows every agent).
    filter: String,
    /// The filter being typed after `/`, until Enter applies it or Esc clears it.
    filter_input: Option<String>,
    notice: Option<Notice>,
    /// Why the last refresh failed, while the server cannot be read.
    disconnected: Option<String>,
}

impl Model {
    /// An empty view of the server described by `title`, showing the state `fields`.
    pub fn new(title: impl Into<String>, fields: Vec<String>) -> Model {
        Model {
            title: title.into(),
            fields,
            agents: Vec::new(),
            sync_points: Vec::new(),
            health: Err("not read yet".into()),
            rates: None,
            task_queues: Vec::new(),
            data_plane: Vec::new(),
            systems: Vec::new(),
            last_counters: None,
            selected: None,
            sort: SortColumn::Id,
            filter: String::new(),
            filter_input: None,
            notice: None,
            disconnected: None,
        }
    }

    /// Replaces what is shown with a fresh snapshot of the server.
    pub fn apply(&mut self, snapshot: Snapshot) {
        let Snapshot {
            agents,
            states,
            sync_points,
            votes,
            collectives,
            health,
            info,
            task_queues,
            data_plane,
            systems,
        } = snapshot;
        self.task_queues = task_queues;
        self.data_plane = data_plane_lines(&data_plane, info.now_ms);
        self.systems = systems_lines(&systems);
        let health_of: HashMap<(&str, &str), Health> = match &health {
            Ok(h) => h
                .agents
                .iter()
                .map(|a| ((a.namespace.as_str(), a.agent_id.as_str()), Health::parse(&a.status)))
                .collect(),
            Err(_) => HashMap::new(),
        };
        self.agents = agents
            .iter()
            .map(|a| AgentRow {
                id: a.agent_id.clone(),
                role: a.role.clone(),
                status: status_name(a.status),
                health: health_of.get(&(a.namespace.as_str(), a.agent_id.as_str())).copied().unwrap_or(Health::Unknown),
                breaker: a.breaker_state.clone(),
                queue_depth: a.queue_depth,
                fields: self.fields.iter().map(|f| field_text(states.get(&a.agent_id), f)).collect(),
            })
            .collect();
        let waiting = v1::sync_point_status::State::Waiting as i32;
        let mut sync_points: Vec<&v1::SyncPointStatus> = sync_points.iter().filter(|s| s.state == waiting).collect();
        sync_points.sort_by_key(|s| (s.created_at_ms, s.sync_id.clone()));
        self.sync_points = sync_points
            .into_iter()
            .map(|s| SyncRow {
                id: s.sync_id.clone(),
                arrived: s.arrived.len(),
                required: s.required_count,
                missing: s.missing.clone(),
                waiting_ms: s.now_ms.saturating_sub(s.created_at_ms),
            })
            .collect();
        // Open votes wait for ballots as barriers wait for arrivals: shown after them, by age.
        let mut open: Vec<&v1::VoteRecord> = votes.iter().filter(|v| v.state == "open").collect();
        open.sort_by_key(|v| (v.created_at_ms, v.vote_id.clone()));
        self.sync_points.extend(open.into_iter().map(|v| SyncRow {
            id: format!("vote {}", v.vote_id),
            arrived: v.ballots.len(),
            required: v.required_count,
            missing: v.missing.clone(),
            waiting_ms: info.now_ms.saturating_sub(v.created_at_ms),
        }));
        // So do collectives for their members (until every member joined, then for the transfer).
        let mut running: Vec<&v1::CollectiveStatus> = collectives.iter().collect();
        running.sort_by_key(|c| (std::cmp::Reverse(c.waiting_ms), c.collective_id.clone()));
        self.sync_points.extend(running.into_iter().map(|c| SyncRow {
            id: format!("collective {}", c.collective_id),
            arrived: c.members.len() - c.missing.len().min(c.members.len()),
            required: c.members.len() as u32,
            missing: c.missing.clone(),
            waiting_ms: c.waiting_ms,
        }));
        // And open tick rounds for the participants that have not answered yet.
        self.sync_points.extend(data_plane.series.iter().filter_map(|s| s.open_round.as_ref()).map(|r| SyncRow {
            id: format!("round {} #{}", r.series, r.round),
            arrived: r.answered.len(),
            required: r.participants.len() as u32,
            missing: r.waiting.clone(),
            waiting_ms: info.now_ms.saturating_sub(r.opened_at_ms),
        }));
        self.health = health.map(|h| SystemHealth {
            score: h.score,
            healthy: h.healthy,
            degraded: h.degraded,
            stuck: h.stuck,
            unhealthy: h.unhealthy,
            history: h.history.iter().map(|s| s.score).collect(),
        });
        let counters = Counters::of(&info);
        self.rates = self.last_counters.and_then(|earlier| counters.rates_since(&earlier));
        self.last_counters = Some(counters);
        self.disconnected = None;
        self.forget_hidden_selection();
    }

    /// Notes that the server could not be read; what was read last stays on screen.
    pub fn disconnected(&mut self, reason: impl Into<String>) {
        self.disconnected = Some(reason.into());
    }

    /// Shows the server's answer to an operator's action.
    pub fn acted(&mut self, action: &Action, outcome: Result<String, String>) {
        let (verb, id) = match action {
            Action::Quit => return,
            Action::Pause(id) => ("pause", id),
            Action::Resume(id) => ("resume", id),
            Action::Restart(id) => ("restart", id),
        };
        self.notice = Some(match outcome {
            Ok(detail) => Notice { text: format!("{verb} {id}: {detail}"), error: false },
            Err(e) => Notice { text: format!("{verb} {id} failed: {e}"), error: true },
        });
    }

    /// The agent rows shown, filtered and sorted (ties by id).
    pub fn rows(&self) -> Vec<&AgentRow> {
        let mut rows: Vec<&AgentRow> = self.agents.iter().filter(|a| a.matches(&self.filter)).collect();
        rows.sort_by(|a, b| {
            let by_column = match self.sort {
                SortColumn::Id => std::cmp::Ordering::Equal,
                SortColumn::Status => a.status.cmp(&b.status),
                SortColumn::Health => Reverse(a.health.severity()).cmp(&Reverse(b.health.severity())),
                SortColumn::Queue => Reverse(a.queue_depth).cmp(&Reverse(b.queue_depth)),
            };
            by_column.then_with(|| a.id.cmp(&b.id))
        });
        rows
    }

    fn selected_index(&self) -> Option<usize> {
        let selected = self.selected.as_deref()?;
        self.rows().iter().position(|r| r.id == selected)
    }

    /// Moves the selection `step` rows down (up when negative); with nothing selected, selects
    /// the first row.
    fn move_selection(&mut self, step: isize) {
        let rows = self.rows();
        let Some(last) = rows.len().checked_sub(1) else { return };
        let next = match self.selected_index() {
            Some(i) => i.saturating_add_signed(step).min(last),
            None => 0,
        };
        self.selected = Some(rows[next].id.clone());
    }

    fn forget_hidden_selection(&mut self) {
        if self.selected.is_some() && self.selected_index().is_none() {
            self.selected = None;
        }
    }

    fn hint(&mut self, text: &str) {
        self.notice = Some(Notice { text: text.to_owned(), error: false });
    }
}

/// A state field's value as shown: strings without quotes, other values as JSON.
fn field_text(state: Option<&Value>, field: &str) -> String {
    match state.and_then(|s| s.get(field)) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// Applies a key to the model; returns what the server should be asked, if anything.
pub fn on_key(model: &mut Model, key: KeyEvent) -> Option<Action> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && key.code == KeyCode::Char('c') {
        return Some(Action::Quit);
    }
    if let Some(input) = &mut model.filter_input {
        match key.code {
            KeyCode::Char(c) if !ctrl => input.push(c),
            KeyCode::Backspace => {
                input.pop();
            }
            KeyCode::Enter => {
                model.filter = input.to_lowercase();
                model.filter_input = None;
                model.forget_hidden_selection();
            }
            KeyCode::Esc => {
                model.filter.clear();
                model.filter_input = None;
            }
            _ => {}
        }
        return None;
    }
    let selected = || model.selected.clone();
    let action = match key.code {
        _ if ctrl => return None,
        KeyCode::Char('q') | KeyCode::Esc => return Some(Action::Quit),
        KeyCode::Down | KeyCode::Char('j') => {
            model.move_selection(1);
            return None;
        }
        KeyCode::Up | KeyCode::Char('k') => {
            model.move_selection(-1);
            return None;
        }
        KeyCode::Char('s') => {
            model.sort = model.sort.next();
            return None;
        }
        KeyCode::Char('/') => {
            model.filter_input = Some(model.filter.clone());
            return None;
        }
        KeyCode::Char('p') => selected().map(Action::Pause),
        KeyCode::Char('r') => selected().map(Action::Resume),
        KeyCode::Char('R') => selected().map(Action::Restart),
        _ => return None,
    };
    if action.is_none() {
        model.hint("select an agent first (Up/Down)");
    }
    action
}

/// Renders the whole screen.
pub fn draw(frame: &mut Frame, model: &Model) {
    // The data plane pane only takes room when there is something in it.
    let data_plane_height = match model.data_plane.len() {
        0 => 0,
        n => n.min(DATA_PLANE_LINES) as u16 + 2,
    };
    let systems_height = match model.systems.len() {
        0 => 0,
        n => n.min(SYSTEMS_LINES) as u16 + 2,
    };
    let [title, agents, bottom, data_plane, systems, status, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(4),
        Constraint::Length(9),
        Constraint::Length(data_plane_height),
        Constraint::Length(systems_height),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let [sync_points, system] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(bottom);
    frame.render_widget(Line::from(model.title.as_str()).bold(), title);
    draw_agents(frame, agents, model);
    draw_sync_points(frame, sync_points, model);
    draw_system(frame, system, model);
    if data_plane_height > 0 {
        draw_lines(frame, data_plane, " Rounds, streams and retained topics ", &model.data_plane, DATA_PLANE_LINES);
    }
    if systems_height > 0 {
        draw_lines(frame, systems, " Synced systems ", &model.systems, SYSTEMS_LINES);
    }
    frame.render_widget(status_line(model), status);
    frame.render_widget(help_line(model), help);
}

fn draw_agents(frame: &mut Frame, area: Rect, model: &Model) {
    let rows = model.rows();
    let mut header: Vec<String> = ["ID", "ROLE", "STATUS", "HEALTH", "BREAKER", "QUEUE"].map(String::from).into();
    header.extend(model.fields.iter().cloned());
    let plain = Style::new();
    let cells: Vec<Vec<(String, Style)>> = rows
        .iter()
        .map(|a| {
            let breaker = if a.breaker == "closed" { plain } else { plain.fg(Color::Red) };
            let mut cells = vec![
                (a.id.clone(), plain),
                (a.role.clone(), plain),
                (a.status.clone(), plain),
                (format!("● {}", a.health.label()), plain.fg(a.health.color())),
                (a.breaker.clone(), breaker),
                (a.queue_depth.to_string(), plain),
            ];
            cells.extend(a.fields.iter().map(|value| (value.clone(), plain)));
            cells
        })
        .collect();
    // Each column as wide as its widest value, so that the grid reads like a table in any size.
    let column_widths: Vec<u16> = header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let widest = cells.iter().map(|c| c[i].0.chars().count()).chain([h.chars().count()]).max().unwrap_or(0);
            widest.min(MAX_COLUMN_WIDTH) as u16
        })
        .collect();
    // Two spaces between columns where they fit, one in a narrow terminal; the id column is never
    // cut (a Min outranks a Length when the columns must shrink).
    let room = area.width.saturating_sub(2 + 2); // the borders and the selection marker
    let spacing = if column_widths.iter().sum::<u16>() + 2 * column_widths.len() as u16 <= room { 2 } else { 1 };
    let widths =
        column_widths.iter().enumerate().map(|(i, &w)| if i == 0 { Constraint::Min(w) } else { Constraint::Length(w) });
    let table_rows =
        cells.into_iter().map(|row| Row::new(row.into_iter().map(|(text, style)| Cell::from(text).style(style))));
    let mut title = format!(" Agents ({}) · sort: {} ", rows.len(), model.sort.name());
    if !model.filter.is_empty() {
        title += &format!("· filter: {} ", model.filter);
    }
    let table = Table::new(table_rows, widths)
        .header(Row::new(header).bold())
        .column_spacing(spacing)
        // Spare width goes after the last column, not into the id column.
        .flex(ratatui::layout::Flex::Start)
        .block(Block::bordered().title(title))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("▶ ");
    let mut state = TableState::default().with_selected(model.selected_index());
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_sync_points(frame: &mut Frame, area: Rect, model: &Model) {
    let rows = model.sync_points.iter().map(|s| {
        Row::new([
            Cell::from(s.id.clone()),
            Cell::from(format!("{}/{}", s.arrived, s.required)),
            Cell::from(s.missing_text()).fg(Color::Yellow),
            Cell::from(format!("{:.1}s", s.waiting_ms as f64 / 1000.0)),
        ])
    });
    // Who is missing gets whatever the id, count and time leave.
    let widest_id = model.sync_points.iter().map(|s| s.id.chars().count()).chain(["SYNC POINT".len()]).max();
    let id_width = widest_id.unwrap_or(0).min(MAX_COLUMN_WIDTH) as u16;
    let widths = [Constraint::Length(id_width), Constraint::Length(7), Constraint::Fill(1), Constraint::Length(7)];
    let table =
        Table::new(rows, widths).header(Row::new(["SYNC POINT", "ARRIVED", "MISSING", "WAITING"]).bold()).block(
            Block::bordered()
                .title(format!(" Sync points, votes and collectives waiting ({}) ", model.sync_points.len())),
        );
    frame.render_widget(table, area);
}

fn draw_system(frame: &mut Frame, area: Rect, model: &Model) {
    let block = Block::bordered().title(" System ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    // The text wraps in narrow terminals; the health trend keeps the last rows.
    let [text, trend] = Layout::vertical([Constraint::Min(2), Constraint::Length(3)]).areas(inner);
    let health = match &model.health {
        Ok(h) => {
            let color = if h.unhealthy > 0 {
                Color::Red
            } else if h.degraded + h.stuck > 0 {
                Color::Yellow
            } else {
                Color::Green
            };
            Line::from(vec![
                Span::raw("health "),
                Span::raw(format!("{:.0}%", h.score * 100.0)).fg(color).bold(),
                Span::raw(format!(
                    "  {} healthy · {} degraded · {} stuck · {} unhealthy",
                    h.healthy, h.degraded, h.stuck, h.unhealthy
                )),
            ])
        }
        Err(why) => Line::from(vec![Span::raw("health "), Span::raw("?").bold(), Span::raw(format!("  {why}"))]),
    };
    let rates = match model.rates {
        Some(r) => Line::from(format!(
            "msgs/s  published {:.1} · delivered {:.1} · dropped {:.1}",
            r.published, r.delivered, r.dropped
        )),
        None => Line::from("msgs/s  (measuring)"),
    };
    let mut lines = vec![health, rates];
    // Task queues, the one whose oldest ready task waits longest first.
    let mut queues: Vec<&v1::TaskQueue> = model.task_queues.iter().collect();
    queues.sort_by_key(|q| (std::cmp::Reverse(q.oldest_ready_age_ms), q.r#type.clone()));
    lines.extend(queues.into_iter().map(|q| {
        let mut parts = vec![format!("{} ready", q.ready)];
        if q.ready > 0 {
            parts[0].push_str(&format!(", oldest {:.1}s", q.oldest_ready_age_ms as f64 / 1000.0));
        }
        parts.push(format!("{} held", q.held));
        // Only what is there: the pane is narrow.
        if q.waiting > 0 {
            parts.push(format!("{} waiting", q.waiting));
        }
        if q.dead_lettered > 0 {
            parts.push(format!("{} dead", q.dead_lettered));
        }
        let color = if q.dead_lettered > 0 { Color::Red } else { Color::Reset };
        Line::from(format!("tasks {}: {}", q.r#type, parts.join(" · "))).fg(color)
    }));
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), text);
    if let Ok(h) = &model.health {
        // The newest samples that fit, one column each, on a fixed 0-100 % scale.
        let percents: Vec<u64> = h.history.iter().map(|s| (s * 100.0).round() as u64).collect();
        let shown = &percents[percents.len().saturating_sub(trend.width as usize)..];
        frame.render_widget(Sparkline::default().data(shown).max(100).fg(Color::Cyan), trend);
    }
}

/// A pane of coloured lines under `title`, at most `most` of them (the rest counted in the title).
fn draw_lines(frame: &mut Frame, area: Rect, title: &str, lines: &[(String, Color)], most: usize) {
    let shown = lines.len().min(most);
    let mut title = title.to_owned();
    if shown < lines.len() {
        title += &format!("({} more not shown) ", lines.len() - shown);
    }
    let lines: Vec<Line> = lines[..shown].iter().map(|(text, color)| Line::from(text.as_str()).fg(*color)).collect();
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(title)), area);
}

/// The synced systems in lines, most urgent first: each open incident in the server's priority
/// order (red at severity 1 or 2), then the stale systems, then those at risk (highest first),
/// then one line of counts. Nothing when the server has no systems.
fn systems_lines(read: &Result<SyncedSystems, String>) -> Vec<(String, Color)> {
    let s = match read {
        Ok(s) if s.systems.is_empty() && s.incidents.is_empty() => return Vec::new(),
        Ok(s) => s,
        Err(why) => return vec![(format!("sync monitor not readable: {why}"), Color::Yellow)],
    };
    let mut lines = Vec::new();
    for i in &s.incidents {
        let acked = if i.acked_by.is_empty() { String::new() } else { format!(" · acked by {}", i.acked_by) };
        let color = if i.severity <= 2 { Color::Red } else { Color::Yellow };
        lines.push((
            format!(
                "incident #{} {} {}: severity {}, score {}, {} downstream at risk, open {:.0}s{acked}",
                i.id,
                i.system,
                i.cause.as_str(),
                i.severity,
                i.score,
                i.at_risk,
                s.read_at.saturating_sub(i.opened_at) as f64 / 1000.0
            ),
            color,
        ));
    }
    let names = |mut list: Vec<String>| {
        let more = list.len().saturating_sub(6);
        list.truncate(6);
        let mut text = list.join(", ");
        if more > 0 {
            text += &format!(" (+{more})");
        }
        text
    };
    let stale: Vec<String> = s.systems.iter().filter(|x| x.stale).map(|x| x.spec.name.clone()).collect();
    if !stale.is_empty() {
        lines.push((format!("stale: {}", names(stale.clone())), Color::Yellow));
    }
    let mut at_risk: Vec<&SystemStatus> = s.systems.iter().filter(|x| x.risk >= AT_RISK).collect();
    at_risk.sort_by(|a, b| b.risk.total_cmp(&a.risk).then_with(|| a.spec.name.cmp(&b.spec.name)));
    if !at_risk.is_empty() {
        let list = at_risk.iter().map(|x| format!("{} {:.0}%", x.spec.name, x.risk * 100.0)).collect();
        lines.push((format!("at risk: {}", names(list)), Color::Yellow));
    }
    let failed = s.systems.iter().filter(|x| x.last_status == Some(Status::Failed)).count();
    lines.push((
        format!(
            "systems: {} · {} fresh · {} stale · {} failed · {} at risk · {} open incidents",
            s.systems.len(),
            s.systems.len() - stale.len(),
            stale.len(),
            failed,
            at_risk.len(),
            s.incidents.len()
        ),
        Color::Reset,
    ));
    lines
}

/// The data plane in lines, worst news first: rounds that missed someone, tick controllers with
/// idle sources, late drops or skew, buffers with overdue samples; then the rest; then one line
/// for the retained topics.
fn data_plane_lines(plane: &DataPlane, now_ms: u64) -> Vec<(String, Color)> {
    let mut lines: Vec<(u8, String, Color)> = Vec::new();
    for series in &plane.series {
        let Some(spec) = &series.spec else { continue };
        if series.open_round.is_some() {
            continue; // shown with the waiting sync points
        }
        let next = match series.next_tick_ms {
            0 => String::new(),
            at => format!(" · next in {:.1}s", at.saturating_sub(now_ms) as f64 / 1000.0),
        };
        let last = plane.last_rounds.iter().find(|r| r.series == spec.name && r.round == series.last_round);
        match last {
            None => lines.push((2, format!("round {}: none closed yet{next}", spec.name), Color::Reset)),
            Some(r) if r.missed.is_empty() => lines.push((
                2,
                format!("round {} #{}: {}, {} answered{next}", spec.name, r.round, r.closing, r.answered.len()),
                Color::Reset,
            )),
            Some(r) => {
                let missed: Vec<String> = r.missed.iter().map(|m| format!("{} ({})", m.agent, m.why)).collect();
                let text =
                    format!("round {} #{}: {}, missed {}{next}", spec.name, r.round, r.closing, missed.join(", "));
                lines.push((0, text, Color::Red));
            }
        }
    }
    for ticker in &plane.tickers {
        let (Some(spec), Some(stats)) = (&ticker.spec, &ticker.stats) else { continue };
        let idle: Vec<&str> = ticker.sources.iter().filter(|s| s.idle).map(|s| s.publisher.as_str()).collect();
        let mut parts = vec![
            format!("tick {}", stats.next_tick),
            format!("{} events", stats.events),
            format!("{} sources", ticker.sources.len()),
        ];
        if !idle.is_empty() {
            parts.push(format!("idle: {}", idle.join(", ")));
        }
        for (count, what) in [
            (stats.late_dropped, "late dropped"),
            (stats.corrections, "corrections"),
            (stats.skew_violations, "skew violations"),
        ] {
            if count > 0 {
                parts.push(format!("{count} {what}"));
            }
        }
        let worrying = !idle.is_empty() || stats.late_dropped > 0 || stats.skew_violations > 0;
        let (rank, color) = if worrying { (1, Color::Yellow) } else { (2, Color::Reset) };
        lines.push((rank, format!("ticker {}: {}", spec.id, parts.join(" · ")), color));
    }
    for buffer in &plane.buffers {
        let (Some(spec), Some(stats)) = (&buffer.spec, &buffer.stats) else { continue };
        let mut text = format!(
            "buffer {}: {:.0}% provisional · mean error {:.3} · max {:.3}",
            spec.id,
            stats.provisional_share * 100.0,
            stats.mean_abs_error,
            stats.max_abs_error
        );
        if stats.outstanding > 0 {
            text += &format!(" · {} overdue", stats.outstanding);
        }
        let (rank, color) = if stats.outstanding > 0 { (1, Color::Yellow) } else { (2, Color::Reset) };
        lines.push((rank, text, color));
    }
    // Stable: within a rank, series, then controllers, then buffers, each in the server's order.
    lines.sort_by_key(|(rank, _, _)| *rank);
    let mut lines: Vec<(String, Color)> = lines.into_iter().map(|(_, text, color)| (text, color)).collect();
    if !plane.topics.is_empty() {
        let messages: u64 = plane.topics.iter().map(|t| t.messages).sum();
        let bytes: u64 = plane.topics.iter().map(|t| t.bytes).sum();
        let largest = plane.topics.iter().max_by_key(|t| (t.bytes, Reverse(t.topic.as_str()))).expect("not empty");
        lines.push((
            format!(
                "topics: {} retained · {messages} messages · {} (largest: {} {})",
                plane.topics.len(),
                size_text(bytes),
                largest.topic,
                size_text(largest.bytes)
            ),
            Color::Reset,
        ));
    }
    lines
}

/// A byte count as people read it.
fn size_text(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

fn status_line(model: &Model) -> Line<'_> {
    if let Some(why) = &model.disconnected {
        return Line::from(format!("disconnected — retrying ({why})")).fg(Color::Red).bold();
    }
    match &model.notice {
        Some(n) if n.error => Line::from(n.text.as_str()).fg(Color::Red),
        Some(n) => Line::from(n.text.as_str()),
        None => Line::from("connected").fg(Color::Green),
    }
}

fn help_line(model: &Model) -> Line<'_> {
    match &model.filter_input {
        Some(input) => Line::from(format!("filter: {input}▏  Enter apply · Esc clear")).fg(Color::Cyan),
        None => Line::from("q quit · ↑↓/jk select · s sort · / filter · p pause · r resume · R restart").dim(),
    }
}

/// The server, as the monitor reads and steers it.
struct Server {
    client: Client,
    admin: AdminClient,
    streams: StreamsClient,
    systems: SystemsClient,
    /// Whether any state field is shown (if not, states are not read at all).
    read_states: bool,
    /// The monitored namespace, by its full name (for the task queues, listed for all).
    namespace: String,
}

impl Server {
    async fn connect(args: &MonitorArgs) -> anyhow::Result<Server> {
        let client = args.tls.connect(&args.addr, None).await?.with_namespace(args.namespace.clone());
        // The audit log names the operator: the login name when it is a valid name.
        let user = std::env::var("USER").ok().filter(|u| lockstep_core::name::validate("actor", u).is_ok());
        let actor = Some(user.as_deref().unwrap_or("monitor"));
        let token = args.token.as_deref();
        let admin = match &args.admin_addr {
            Some(addr) => {
                args.tls.connect(addr, None).await?.with_namespace(args.namespace.clone()).admin(token, actor)?
            }
            None => client.admin(token, actor)?,
        };
        let namespace = lockstep_core::name::namespace_or_default(&args.namespace)?.to_owned();
        let streams = client.streams(None, None)?;
        let systems = client.systems(None, None)?;
        let read_states = args.fields.iter().any(|f| !f.is_empty());
        Ok(Server { client, admin, streams, systems, read_states, namespace })
    }

    /// Reads everything shown, at once where the calls are independent.
    async fn snapshot(&self) -> Result<Snapshot, Error> {
        let tasks = self.client.tasks();
        let (agents, sync_points, votes, collectives, info, health, task_queues, data_plane, systems) = tokio::join!(
            self.client.list_agents(AgentFilter::default()),
            self.client.list_sync_points(),
            self.client.list_votes(),
            self.client.list_collectives(),
            self.client.server_info(),
            self.admin.health(),
            tasks.queues(),
            self.data_plane(),
            self.synced_systems(),
        );
        let agents = agents?;
        let mut states = HashMap::new();
        if self.read_states {
            // Each read owns its id and a handle on the connection, so that the reads can run
            // concurrently inside the spawned command task (borrowed ones would not be `Send`).
            let ids: Vec<(String, Client)> = agents.iter().map(|a| (a.agent_id.clone(), self.client.clone())).collect();
            let reads = futures::stream::iter(ids)
                .map(|(id, client)| async move {
                    let read = client.get_state(&id).await;
                    (id, read)
                })
                .buffer_unordered(STATE_READS_IN_FLIGHT)
                .collect::<Vec<_>>()
                .await;
            for (id, read) in reads {
                match read {
                    Ok((_version, state)) => {
                        states.insert(id, state);
                    }
                    Err(Error::NotFound(_)) => {} // it left since the listing
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(Snapshot {
            agents,
            states,
            sync_points: sync_points?,
            votes: votes?,
            collectives: collectives?,
            health: health.map_err(|e| admin_error(&e)),
            info: info?,
            task_queues: task_queues?.into_iter().filter(|q| q.namespace == self.namespace).collect(),
            data_plane: data_plane?,
            systems: systems.map_err(|e| e.to_string()),
        })
    }

    /// The sync monitor's active systems and open incidents.
    async fn synced_systems(&self) -> Result<SyncedSystems, Error> {
        let (systems, incidents) = tokio::join!(self.systems.list(false), self.systems.incidents(false));
        let read_at =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Ok(SyncedSystems { systems: systems?, incidents: incidents?, read_at })
    }

    /// The namespace's rounds, controllers, buffers and retained topics, with the last closed
    /// round of the series that have no open one.
    async fn data_plane(&self) -> Result<DataPlane, Error> {
        let rounds = self.client.rounds();
        let (series, tickers, buffers, topics) =
            tokio::join!(rounds.list(), self.streams.tickers(), self.streams.buffers(), self.client.topics());
        let series = series?;
        let closed: Vec<(String, u64)> = series
            .iter()
            .filter(|s| s.open_round.is_none() && s.last_round > 0)
            .filter_map(|s| Some((s.spec.as_ref()?.name.clone(), s.last_round)))
            .take(LAST_ROUNDS_READ)
            .collect();
        let reads = futures::stream::iter(closed)
            .map(|(name, round)| {
                let rounds = rounds.clone();
                async move { rounds.round(&name, round).await }
            })
            .buffered(LAST_ROUNDS_READ)
            .collect::<Vec<_>>()
            .await;
        let mut last_rounds = Vec::new();
        for read in reads {
            match read {
                Ok(round) => last_rounds.push(round),
                // The series was removed, or the round left its retention, since the listing.
                Err(e) if e.code() == tonic::Code::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(DataPlane { series, last_rounds, tickers: tickers?, buffers: buffers?, topics: topics? })
    }

    async fn steer(&self, action: &Action) -> Result<String, String> {
        let call = match action {
            Action::Quit => return Ok(String::new()),
            Action::Pause(id) => within(self.admin.pause_agent(id)).await,
            Action::Resume(id) => within(self.admin.resume_agent(id)).await,
            Action::Restart(id) => within(self.admin.restart_agent(id)).await,
        };
        call?.map_err(|e| admin_error(&e))
    }
}

/// `call`'s outcome, or an error in words when it takes longer than [`ANSWER_WITHIN`].
async fn within<T>(call: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(ANSWER_WITHIN, call)
        .await
        .map_err(|_| format!("no answer within {} s", ANSWER_WITHIN.as_secs()))
}

/// An Admin API error in words, with what to do about the usual ones.
fn admin_error(e: &Error) -> String {
    match e {
        Error::Unauthenticated(_) => "the server requires its admin token: pass --token or LOCKSTEP_ADMIN_TOKEN".into(),
        Error::PermissionDenied(_) => "the server refused this admin token: check --token".into(),
        e if e.code() == tonic::Code::Unimplemented => {
            "no Admin API at this address: pass --admin-addr (serve --admin-listen)".into()
        }
        e => e.to_string(),
    }
}

/// `lockstep monitor`: shows the server until the operator quits.
pub async fn run(args: MonitorArgs) -> anyhow::Result<()> {
    let server = Server::connect(&args).await?;
    let namespace = if args.namespace.is_empty() { "default" } else { &args.namespace };
    let fields = args.fields.iter().filter(|f| !f.is_empty()).cloned().collect();
    // Read once before taking over the terminal, so that a wrong address is one plain error line.
    let first = within(server.snapshot())
        .await
        .map_err(anyhow::Error::msg)?
        .with_context(|| format!("cannot read the server at {}", args.addr))?;
    let title = format!("lockstep {} at {}, namespace {namespace}", first.info.version, args.addr);
    let mut model = Model::new(title, fields);
    model.apply(first);

    let every = Duration::from_millis(args.interval_ms);
    // ratatui::try_init also restores the terminal on a panic; restore() covers every other exit.
    let shown = match ratatui::try_init() {
        Ok(mut terminal) => show(&mut terminal, &server, &mut model, every).await,
        Err(e) => Err(anyhow::Error::new(e).context("the monitor needs an interactive terminal")),
    };
    ratatui::restore();
    shown
}

/// The loop: draw, then wait for the next refresh or the next key.
async fn show(
    terminal: &mut DefaultTerminal,
    server: &Server,
    model: &mut Model,
    every: Duration,
) -> anyhow::Result<()> {
    let mut keys = EventStream::new();
    let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        terminal.draw(|frame| draw(frame, model))?;
        tokio::select! {
            _ = refresh.tick() => match within(server.snapshot()).await {
                Ok(Ok(snapshot)) => model.apply(snapshot),
                Ok(Err(e)) => model.disconnected(e.to_string()),
                Err(e) => model.disconnected(e),
            },
            event = keys.next() => match event {
                // Terminals that report releases would otherwise act twice per key.
                Some(Ok(Event::Key(key))) if key.kind != KeyEventKind::Release => match on_key(model, key) {
                    Some(Action::Quit) => return Ok(()),
                    Some(action) => {
                        let outcome = server.steer(&action).await;
                        model.acted(&action, outcome);
                        // Show the effect now rather than at the next tick.
                        refresh.reset_immediately();
                    }
                    None => {}
                },
                Some(Ok(_)) => {} // a resize, a release...: the next draw fits the screen as it is
                Some(Err(e)) => return Err(anyhow::Error::new(e).context("reading the terminal")),
                None => return Ok(()), // the terminal is gone
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use serde_json::json;

    use super::*;

    fn agent(id: &str, role: &str, status: v1::AgentStatus, breaker: &str, queue: u64) -> v1::AgentInfo {
        v1::AgentInfo {
            namespace: "default".into(),
            agent_id: id.into(),
            role: role.into(),
            status: status as i32,
            breaker_state: breaker.into(),
            queue_depth: queue,
            ..Default::default()
        }
    }

    fn health(id: &str, status: &str) -> v1::AgentHealth {
        v1::AgentHealth {
            namespace: "default".into(),
            agent_id: id.into(),
            status: status.into(),
            ..Default::default()
        }
    }

    /// Three agents, one waiting sync point missing `risk-1`, a finished one, health known.
    fn snapshot() -> Snapshot {
        let waiting = v1::SyncPointStatus {
            sync_id: "round-7".into(),
            state: v1::sync_point_status::State::Waiting as i32,
            required_count: 2,
            arrived: vec!["strategy-1".into()],
            missing: vec!["risk-1".into()],
            created_at_ms: 1_000,
            now_ms: 5_200,
            ..Default::default()
        };
        let finished = v1::SyncPointStatus {
            sync_id: "round-6".into(),
            state: v1::sync_point_status::State::Completed as i32,
            missing: vec!["ghost".into()],
            ..Default::default()
        };
        Snapshot {
            agents: vec![
                agent("recorder", "sink", v1::AgentStatus::Idle, "open", 3),
                agent("risk-1", "risk", v1::AgentStatus::Busy, "closed", 40),
                agent("strategy-1", "strategy", v1::AgentStatus::Active, "half_open", 0),
            ],
            states: HashMap::from([(
                "strategy-1".to_owned(),
                json!({"confidence": 0.8, "last_signal": "BUY", "pnl": 1.5, "other": 1}),
            )]),
            sync_points: vec![waiting, finished],
            votes: vec![
                v1::VoteRecord {
                    vote_id: "trade-9".into(),
                    state: "open".into(),
                    required_count: 3,
                    ballots: vec![v1::BallotRecord { agent_id: "strategy-1".into(), ..Default::default() }],
                    missing: vec!["risk-1".into(), "absent-voter".into()],
                    missing_count: 2,
                    ..Default::default()
                },
                v1::VoteRecord { vote_id: "trade-8".into(), state: "decided".into(), ..Default::default() },
            ],
            collectives: vec![v1::CollectiveStatus {
                collective_id: "grad-12".into(),
                members: vec!["w0".into(), "w1".into(), "w2".into()],
                missing: vec!["w2".into()],
                waiting_ms: 1500,
                ..Default::default()
            }],
            health: Ok(v1::HealthResponse {
                agents: vec![
                    health("recorder", "unhealthy"),
                    health("risk-1", "degraded"),
                    health("strategy-1", "healthy"),
                ],
                score: 1.0 / 3.0,
                healthy: 1,
                degraded: 1,
                unhealthy: 1,
                history: vec![v1::HealthSample { score: 1.0, ..Default::default() }],
                ..Default::default()
            }),
            info: v1::ServerInfoResponse {
                version: "0.1.0".into(),
                now_ms: 10_000,
                published: 100,
                ..Default::default()
            },
            task_queues: vec![v1::TaskQueue {
                namespace: "default".into(),
                r#type: "fetch".into(),
                ready: 4,
                held: 2,
                dead_lettered: 1,
                oldest_ready_age_ms: 2_500,
                ..Default::default()
            }],
            data_plane: DataPlane::default(),
            systems: Ok(SyncedSystems::default()),
        }
    }

    fn series(name: &str, last_round: u64, open_round: Option<v1::RoundInfo>) -> v1::RoundSeriesInfo {
        v1::RoundSeriesInfo {
            spec: Some(v1::RoundSeriesSpec { name: name.into(), ..Default::default() }),
            last_round,
            open_round,
            ..Default::default()
        }
    }

    /// Two series (one with an open round waiting for `slow`, one whose last round missed
    /// `hung`), a controller with an idle source, a quiet controller, a buffer with an overdue
    /// sample and two retained topics.
    fn data_plane() -> DataPlane {
        let open = v1::RoundInfo {
            series: "quotes".into(),
            round: 12,
            open: true,
            opened_at_ms: 9_000,
            participants: vec!["fast".into(), "slow".into()],
            answered: vec![v1::RoundAnswerInfo { agent: "fast".into(), after_ms: 3 }],
            waiting: vec!["slow".into()],
            ..Default::default()
        };
        let missed = v1::RoundInfo {
            series: "tick".into(),
            round: 41,
            closing: "timeout".into(),
            answered: vec![v1::RoundAnswerInfo { agent: "alpha".into(), after_ms: 5 }],
            missed: vec![v1::RoundMiss { agent: "hung".into(), why: "timeout".into() }],
            ..Default::default()
        };
        let ticker = |id: &str, idle: bool, late_dropped: u64| v1::TickerInfo {
            spec: Some(v1::TickerSpec { id: id.into(), ..Default::default() }),
            stats: Some(v1::TickerStats { events: 900, next_tick: 31, late_dropped, ..Default::default() }),
            sources: vec![
                v1::TickerSource { publisher: "feed-a".into(), ..Default::default() },
                v1::TickerSource { publisher: "feed-b".into(), idle, ..Default::default() },
            ],
        };
        DataPlane {
            series: vec![series("quotes", 12, Some(open)), series("tick", 41, None)],
            last_rounds: vec![missed],
            tickers: vec![ticker("calm", false, 0), ticker("market", true, 2)],
            buffers: vec![v1::BufferInfo {
                spec: Some(v1::BufferSpec { id: "pose-x".into(), ..Default::default() }),
                stats: Some(v1::BufferStats {
                    provisional_share: 0.25,
                    mean_abs_error: 0.0125,
                    max_abs_error: 0.5,
                    outstanding: 1,
                    ..Default::default()
                }),
            }],
            topics: vec![
                v1::TopicInfo { topic: "feed.btc".into(), messages: 300, bytes: 3 * 1024, ..Default::default() },
                v1::TopicInfo { topic: "feed.eth".into(), messages: 100, bytes: 512, ..Default::default() },
            ],
        }
    }

    fn model() -> Model {
        let fields = ["confidence", "last_signal", "pnl"].map(String::from).into();
        let mut model = Model::new("lockstep test", fields);
        model.apply(snapshot());
        model
    }

    /// The screen as text, one line per row.
    fn screen(model: &Model) -> String {
        let mut terminal = Terminal::new(TestBackend::new(140, 30)).unwrap();
        terminal.draw(|frame| draw(frame, model)).unwrap();
        let buffer = terminal.backend().buffer();
        let area = buffer.area;
        (0..area.height)
            .map(|y| (0..area.width).map(|x| buffer[(x, y)].symbol()).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn ids(model: &Model) -> Vec<&str> {
        model.rows().iter().map(|r| r.id.as_str()).collect()
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn type_keys(model: &mut Model, text: &str) {
        for c in text.chars() {
            assert_eq!(on_key(model, key(KeyCode::Char(c))), None);
        }
    }

    #[test]
    fn the_grid_shows_agents_their_state_fields_health_and_breakers() {
        let text = screen(&model());
        let line_of = |id: &str| text.lines().find(|l| l.contains(id)).unwrap_or_else(|| panic!("{id}:\n{text}"));
        let strategy = line_of("strategy-1");
        for expected in ["strategy", "active", "healthy", "half_open", "0.8", "BUY", "1.5"] {
            assert!(strategy.contains(expected), "{expected} missing from {strategy:?}");
        }
        assert!(!text.contains("other"), "only the chosen fields are shown:\n{text}");
        let recorder = line_of("recorder");
        for expected in ["unhealthy", "open", "3", "-"] {
            assert!(recorder.contains(expected), "{expected} missing from {recorder:?}");
        }
        assert!(line_of("risk-1 ").contains("degraded"));
        for column in ["confidence", "last_signal", "pnl", "BREAKER", "QUEUE"] {
            assert!(text.contains(column), "{column}:\n{text}");
        }
    }

    #[test]
    fn waiting_sync_points_name_who_is_missing_and_finished_ones_are_left_out() {
        let text = screen(&model());
        let line = text.lines().find(|l| l.contains("round-7")).unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains("1/2") && line.contains("risk-1") && line.contains("4.2s"), "{line}");
        assert!(!text.contains("round-6") && !text.contains("ghost"), "{text}");
        let vote = text.lines().find(|l| l.contains("vote trade-9")).unwrap_or_else(|| panic!("{text}"));
        assert!(vote.contains("1/3") && vote.contains("risk-1, absent-voter"), "{vote}");
        assert!(!text.contains("trade-8"), "a decided vote waits for nobody:\n{text}");
        let c = text.lines().find(|l| l.contains("collective grad-12")).unwrap_or_else(|| panic!("{text}"));
        assert!(c.contains("2/3") && c.contains("w2") && c.contains("1.5s"), "{c}");
    }

    #[test]
    fn task_queues_are_shown_per_type_with_the_age_of_their_oldest_ready_task() {
        let text = screen(&model());
        let line = text.lines().find(|l| l.contains("tasks fetch")).unwrap_or_else(|| panic!("{text}"));
        for expected in ["4 ready", "oldest 2.5s", "2 held", "1 dead"] {
            assert!(line.contains(expected), "{expected} missing from {line:?}");
        }
    }

    fn synced(name: &str, stale: bool, last: Option<Status>, risk: f64) -> SystemStatus {
        SystemStatus {
            spec: lockstep_client::systems::SystemSpec { name: name.into(), ..Default::default() },
            registered_at: 0,
            updated_at: 0,
            retired_at: None,
            last_success: None,
            last_status: last,
            last_drift_ms: None,
            stale,
            stale_at: None,
            own_risk: risk,
            risk,
            open_incidents: Vec::new(),
        }
    }

    fn incident(id: u64, system: &str, cause: lockstep_client::systems::Cause, severity: u8) -> Incident {
        Incident {
            id,
            system: system.into(),
            cause,
            opened_at: 10_000,
            count: 1,
            last_seen: 10_000,
            detail: String::new(),
            acked_by: if id == 2 { "alice".into() } else { String::new() },
            acked_at: None,
            notes: Vec::new(),
            resolved_at: None,
            resolved_by: String::new(),
            severity,
            score: 20 + id as u32,
            at_risk: 3,
        }
    }

    #[test]
    fn the_synced_systems_pane_shows_incidents_by_priority_then_stale_and_at_risk_systems() {
        use lockstep_client::systems::Cause;
        let mut model = model();
        let mut with_systems = snapshot();
        with_systems.systems = Ok(SyncedSystems {
            systems: vec![
                synced("feed", true, Some(Status::Ok), 0.8),
                synced("clean", false, Some(Status::Failed), 1.0),
                synced("report", false, None, 0.4),
                synced("archive", false, None, 0.1),
            ],
            // As the server lists them: most urgent first.
            incidents: vec![incident(2, "clean", Cause::Failed, 1), incident(1, "feed", Cause::Stale, 3)],
            read_at: 75_000,
        });
        model.apply(with_systems);
        let text = screen(&model);
        let line_of = |what: &str| text.lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("{what}:\n{text}"));
        let first = line_of("incident #2 clean failed");
        for expected in ["severity 1", "score 22", "3 downstream at risk", "open 65s", "acked by alice"] {
            assert!(first.contains(expected), "{expected} missing from {first:?}");
        }
        assert!(line_of("stale: feed").contains("stale: feed"));
        assert!(line_of("at risk:").contains("at risk: clean 100%, feed 80%, report 40%"), "{text}");
        let counts = line_of("systems: 4");
        assert!(counts.contains("3 fresh · 1 stale · 1 failed · 3 at risk · 2 open incidents"), "{counts}");
        let order: Vec<&str> = model.systems.iter().map(|(t, _)| t.split(':').next().unwrap()).collect();
        assert_eq!(order, ["incident #2 clean failed", "incident #1 feed stale", "stale", "at risk", "systems"]);
        assert_eq!((model.systems[0].1, model.systems[1].1), (Color::Red, Color::Yellow));

        // A caller not allowed to read the monitor is told so; a server without systems shows none.
        let mut refused = snapshot();
        refused.systems = Err("permission denied".into());
        model.apply(refused);
        assert!(screen(&model).contains("sync monitor not readable: permission denied"));
        model.apply(snapshot());
        assert!(!screen(&model).contains("Synced systems"), "{}", screen(&model));
    }

    #[test]
    fn the_data_plane_shows_rounds_misses_idle_sources_overdue_samples_and_retained_topics() {
        let mut model = model();
        let mut with_plane = snapshot();
        with_plane.data_plane = data_plane();
        model.apply(with_plane);
        let text = screen(&model);
        let line_of = |what: &str| text.lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("{what}:\n{text}"));
        // The open round waits for `slow` like a sync point for its missing agents.
        let open = line_of("round quotes #12");
        assert!(open.contains("1/2") && open.contains("slow") && open.contains("1.0s"), "{open}");
        let missed = line_of("round tick #41");
        assert!(missed.contains("timeout") && missed.contains("missed hung (timeout)"), "{missed}");
        let market = line_of("ticker market");
        for expected in ["tick 31", "900 events", "2 sources", "idle: feed-b", "2 late dropped"] {
            assert!(market.contains(expected), "{expected} missing from {market:?}");
        }
        assert!(!line_of("ticker calm").contains("idle"), "{text}");
        let buffer = line_of("buffer pose-x");
        for expected in ["25% provisional", "mean error 0.013", "max 0.500", "1 overdue"] {
            assert!(buffer.contains(expected), "{expected} missing from {buffer:?}");
        }
        let topics = line_of("topics:");
        assert!(topics.contains("2 retained · 400 messages · 3.5 KiB (largest: feed.btc 3.0 KiB)"), "{topics}");

        // Worst news first: the missed round, then the worrying controller and buffer, then the rest.
        let order: Vec<&str> = model.data_plane.iter().map(|(t, _)| t.split(':').next().unwrap()).collect();
        assert_eq!(order, ["round tick #41", "ticker market", "buffer pose-x", "ticker calm", "topics"]);
        assert_eq!(model.data_plane[0].1, Color::Red);

        // Nothing in the data plane: the pane takes no room.
        model.apply(snapshot());
        assert!(!screen(&model).contains("Rounds, streams"), "{}", screen(&model));
    }

    #[test]
    fn system_health_and_message_rates_are_shown() {
        let mut model = model();
        let text = screen(&model);
        assert!(text.contains("health 33%"), "{text}");
        assert!(text.contains("1 healthy · 1 degraded · 0 stuck · 1 unhealthy"), "{text}");
        assert!(text.contains("(measuring)"), "one reading gives no rate yet:\n{text}");
        let mut later = snapshot();
        later.info = v1::ServerInfoResponse { now_ms: 12_000, published: 300, delivered: 50, dropped: 4, ..later.info };
        model.apply(later);
        assert_eq!(model.rates, Some(Rates { published: 100.0, delivered: 25.0, dropped: 2.0 }));
        assert!(screen(&model).contains("published 100.0 · delivered 25.0 · dropped 2.0"));
    }

    #[test]
    fn a_refused_health_call_shows_a_question_mark_and_what_to_do() {
        let mut model = model();
        let mut refused = snapshot();
        refused.health = Err(admin_error(&Error::Unauthenticated("no token".into())));
        model.apply(refused);
        assert!(model.rows().iter().all(|r| r.health == Health::Unknown));
        let text = screen(&model);
        assert!(text.contains("health ?") && text.contains("--token"), "{text}");
        assert!(text.lines().find(|l| l.contains("strategy-1")).unwrap().contains("● ?"), "{text}");
    }

    #[test]
    fn sorting_cycles_through_id_status_health_and_queue() {
        let mut model = model();
        assert_eq!(ids(&model), ["recorder", "risk-1", "strategy-1"]);
        on_key(&mut model, key(KeyCode::Char('s')));
        assert_eq!(ids(&model), ["strategy-1", "risk-1", "recorder"], "active < busy < idle");
        on_key(&mut model, key(KeyCode::Char('s')));
        assert_eq!(ids(&model), ["recorder", "risk-1", "strategy-1"], "worst health first");
        on_key(&mut model, key(KeyCode::Char('s')));
        assert_eq!(ids(&model), ["risk-1", "recorder", "strategy-1"], "deepest queue first");
        assert!(screen(&model).contains("sort: queue"));
        on_key(&mut model, key(KeyCode::Char('s')));
        assert_eq!(model.sort, SortColumn::Id);
    }

    #[test]
    fn the_filter_applies_on_enter_and_esc_clears_it() {
        let mut model = model();
        on_key(&mut model, key(KeyCode::Char('/')));
        type_keys(&mut model, "RISX");
        on_key(&mut model, key(KeyCode::Backspace));
        assert!(screen(&model).contains("filter: RIS"), "the text typed is shown");
        assert_eq!(ids(&model).len(), 3, "nothing filtered before Enter");
        on_key(&mut model, key(KeyCode::Enter));
        assert_eq!(ids(&model), ["risk-1"], "matches the role or id, whatever the case");
        assert!(!screen(&model).contains("recorder"));

        // q while typing is text, not quit; the status column matches too.
        on_key(&mut model, key(KeyCode::Char('/')));
        on_key(&mut model, key(KeyCode::Backspace));
        on_key(&mut model, key(KeyCode::Backspace));
        on_key(&mut model, key(KeyCode::Backspace));
        type_keys(&mut model, "q");
        on_key(&mut model, key(KeyCode::Backspace));
        type_keys(&mut model, "idle");
        on_key(&mut model, key(KeyCode::Enter));
        assert_eq!(ids(&model), ["recorder"]);

        on_key(&mut model, key(KeyCode::Char('/')));
        on_key(&mut model, key(KeyCode::Esc));
        assert_eq!(ids(&model).len(), 3);
        assert_eq!(on_key(&mut model, key(KeyCode::Char('q'))), Some(Action::Quit));
    }

    #[test]
    fn keys_select_an_agent_and_ask_the_server_to_steer_it() {
        let mut model = model();
        assert_eq!(on_key(&mut model, key(KeyCode::Char('p'))), None, "nothing selected yet");
        assert!(screen(&model).contains("select an agent first"));
        on_key(&mut model, key(KeyCode::Down));
        assert_eq!(model.selected.as_deref(), Some("recorder"));
        on_key(&mut model, key(KeyCode::Char('j')));
        on_key(&mut model, key(KeyCode::Down));
        on_key(&mut model, key(KeyCode::Down));
        assert_eq!(model.selected.as_deref(), Some("strategy-1"), "stops at the last row");
        on_key(&mut model, key(KeyCode::Char('k')));
        assert_eq!(on_key(&mut model, key(KeyCode::Char('p'))), Some(Action::Pause("risk-1".into())));
        assert_eq!(on_key(&mut model, key(KeyCode::Char('r'))), Some(Action::Resume("risk-1".into())));
        let shift_r = KeyEvent::new(KeyCode::Char('R'), KeyModifiers::SHIFT);
        assert_eq!(on_key(&mut model, shift_r), Some(Action::Restart("risk-1".into())));
        let ctrl_p = KeyEvent::new(KeyCode::Char('p'), KeyModifiers::CONTROL);
        assert_eq!(on_key(&mut model, ctrl_p), None, "control keys are not commands");
        assert!(screen(&model).lines().any(|l| l.contains("▶ risk-1")), "the selection is marked");

        model.acted(&Action::Pause("risk-1".into()), Ok("paused".into()));
        assert!(screen(&model).contains("pause risk-1: paused"));
        model.acted(&Action::Restart("risk-1".into()), Err("not found: risk-1".into()));
        assert!(screen(&model).contains("restart risk-1 failed: not found: risk-1"));

        assert_eq!(on_key(&mut model, key(KeyCode::Esc)), Some(Action::Quit));
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(on_key(&mut model, ctrl_c), Some(Action::Quit));
    }

    #[test]
    fn the_selection_follows_its_agent_and_is_dropped_when_it_goes() {
        let mut model = model();
        on_key(&mut model, key(KeyCode::Down));
        on_key(&mut model, key(KeyCode::Down));
        assert_eq!(model.selected.as_deref(), Some("risk-1"));
        on_key(&mut model, key(KeyCode::Char('s')));
        on_key(&mut model, key(KeyCode::Char('s')));
        on_key(&mut model, key(KeyCode::Char('s')));
        assert_eq!(model.selected.as_deref(), Some("risk-1"), "sorting moves the row, not the selection");
        let mut gone = snapshot();
        gone.agents.retain(|a| a.agent_id != "risk-1");
        model.apply(gone);
        assert_eq!(model.selected.as_deref(), None, "never act on an agent the operator did not pick");
        assert_eq!(on_key(&mut model, key(KeyCode::Char('p'))), None);
    }

    #[test]
    fn a_lost_server_is_reported_and_the_last_view_kept_until_it_answers_again() {
        let mut model = model();
        model.disconnected("connection refused");
        let text = screen(&model);
        assert!(text.contains("disconnected — retrying (connection refused)"), "{text}");
        assert!(text.contains("strategy-1"));
        model.apply(snapshot());
        assert!(!screen(&model).contains("disconnected"));
    }
}

//! `lockstep token create`: mints a signed token (see `lockstep_core::auth`) with the secret a
//! server is started with (`--token-secret-file`), for agents, tools and operators.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use lockstep_core::auth::{Claims, Key};

#[derive(Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new token (to stdout). Permissions are deny-by-default: name each one.
    Create(CreateArgs),
}

#[derive(Args)]
struct CreateArgs {
    /// The file holding the server's token secret (its `--token-secret-file`).
    #[arg(long, env = "LOCKSTEP_TOKEN_SECRET_FILE", value_name = "FILE")]
    secret_file: PathBuf,
    /// Who the bearer is (recorded as the actor of its operators' actions).
    #[arg(long)]
    subject: String,
    /// A namespace the bearer may act in (repeat for more; `*` for every namespace).
    #[arg(long = "namespace", value_name = "NS")]
    namespaces: Vec<String>,
    /// Bind the token to this agent id: it may register only as this agent.
    #[arg(long)]
    agent: Option<String>,
    /// Bind the token to this role: it may register only with this role.
    #[arg(long)]
    role: Option<String>,
    /// A topic pattern the bearer may publish on (repeat for more; `>` for every topic).
    #[arg(long, value_name = "PATTERN")]
    publish: Vec<String>,
    /// A pattern the bearer may subscribe to, or to any narrower pattern (repeat for more).
    #[arg(long, value_name = "PATTERN")]
    subscribe: Vec<String>,
    /// Allow reading other agents' state (GetState, watches of others).
    #[arg(long)]
    read_state: bool,
    /// Allow registering and acting as other agent ids and roles than the bound ones (a registry
    /// acting on agents' behalf).
    #[arg(long)]
    act_for_others: bool,
    /// Allow operators' actions in its namespaces (with `--namespace '*'`: server-wide ones too).
    #[arg(long)]
    admin: bool,
    /// Seconds the token is valid for (none: it does not expire).
    #[arg(long, value_name = "SECONDS")]
    expires_in: Option<u64>,
}

/// The key in a secret file.
pub fn read_key(path: &Path) -> anyhow::Result<Key> {
    let secret =
        std::fs::read(path).with_context(|| format!("cannot read the token secret file {}", path.display()))?;
    Key::new(&secret).map_err(|e| anyhow::anyhow!("{e} (in {})", path.display()))
}

pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let TokenCommand::Create(a) = args.command;
    let key = read_key(&a.secret_file)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let claims = Claims {
        sub: a.subject,
        namespaces: a.namespaces,
        agent: a.agent,
        role: a.role,
        publish: a.publish,
        subscribe: a.subscribe,
        read_state: a.read_state,
        act_for_others: a.act_for_others,
        admin: a.admin,
        exp: a.expires_in.map(|s| now.saturating_add(s)),
        iat: Some(now),
        ..Claims::default()
    };
    let token = key.sign(&claims).context("cannot make this token")?;
    println!("{token}");
    Ok(())
}

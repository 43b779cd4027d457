"""The SyncBus upgrade guide's flow on lockstep through ``lockstep.compat``: interest-based
registration, delta updates with the seed's shallow meaning, ticks on tick rounds, circuit breakers
tripped by failing agents, system health, and the command interface."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Dict, List

import pytest

from conftest import ServerProcess, eventually
from lockstep.compat import DEFAULT_CIRCUIT_CONFIG, CommandInterface, HighPerformanceSyncBus


@pytest.fixture
def addr(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("LOCKSTEP_ADDR", server.address)
    return server.address


class Scanner:
    """Returns what it saw, as the guide's agents return their results from ``update``."""

    def __init__(self) -> None:
        self.seen: List[Dict[str, Any]] = []
        self.command_queue: deque = deque()
        self.is_paused = False

    async def update(self, data: Dict[str, Any]) -> Dict[str, Any]:
        self.seen.append(data)
        return {"scanner_data": {"signals": len(self.seen)}}


class Risk:
    def __init__(self) -> None:
        self.seen: List[Dict[str, Any]] = []

    def update(self, data: Dict[str, Any]) -> Dict[str, Any]:  # a plain method works too
        self.seen.append(data)
        return {"risk_metrics": {"var": 0.1}}


class Broken:
    async def update(self, data: Dict[str, Any]) -> Dict[str, Any]:
        raise RuntimeError("model not loaded")


async def test_registration_and_delta_updates(addr: str) -> None:
    syncbus = HighPerformanceSyncBus()
    assert syncbus.circuit_config == DEFAULT_CIRCUIT_CONFIG == {
        "failure_threshold": 5, "recovery_delay": 30, "timeout_per_agent": 5.0}
    # The guide's usage examples.
    await syncbus.register_agent('risk_sentinel', interests=['execution_result', 'risk_metrics'])
    await syncbus.register_agent('scanner', interests=['market_data', 'scanner_data'])
    await syncbus.register_agent('strategy_trainer', interests=['trades', 'performance'])
    await syncbus.register_agent('trader')  # interests default to ['all']
    assert syncbus.subscriptions['trader'] == ['all']
    assert await syncbus.register_agent('trader', interests=['x']) is None  # again: returns, as in the seed
    assert syncbus.subscriptions['trader'] == ['all']

    # Good: Delta updates
    await syncbus.update_agent_state('trader', {'confidence': 0.85})
    await syncbus.update_agent_state('trader', {'position': {'btc': 1, 'eth': 2}, 'pnl': 1.5})
    # dict.update: a top-level member is replaced whole, not merged; None leaves no value.
    await syncbus.update_agent_state('trader', {'position': {'btc': 3}, 'pnl': None})
    state = await syncbus.get_agent_state('trader')
    assert state == {'confidence': 0.85, 'position': {'btc': 3}}
    # An agent the bus never registered: ignored, as the seed's bus does.
    await syncbus.update_agent_state('nobody', {'x': 1})
    assert await syncbus.get_agent_state('nobody') == {}
    with pytest.raises(TypeError):
        await syncbus.update_agent_state('trader', [('x', 1)])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        HighPerformanceSyncBus(circuit_config={'failure_threshold': 0})
    with pytest.raises(ValueError):
        HighPerformanceSyncBus(circuit_config={'open_after': 3})
    with pytest.raises(ValueError):
        HighPerformanceSyncBus(circuit_config={'failure_threshold': 2.5})
    await syncbus.close()


async def test_tick_calls_each_agent_with_its_interests_and_merges_the_results(addr: str) -> None:
    syncbus = HighPerformanceSyncBus()
    scanner, risk = Scanner(), Risk()
    # Step 1 of the migration guide: attach, then register with interests.
    syncbus.attach('scanner', scanner)
    await syncbus.register_agent('scanner', interests=['market_data', 'scanner_data'])
    syncbus.attach('risk', risk)
    await syncbus.register_agent('risk', interests=['execution_result', 'risk_metrics'])
    await syncbus.update_state('market_data', {'btc': 64000})

    await syncbus.tick()
    assert scanner.seen == [{'market_data': {'btc': 64000}}]
    assert risk.seen == [{}]
    assert await syncbus.get_state('scanner_data') == {'signals': 1}
    assert await syncbus.get_state('risk_metrics') == {'var': 0.1}
    assert await syncbus.get_state('market_data') == {'btc': 64000}
    assert await syncbus.get_state('absent') is None

    await syncbus.tick()
    assert scanner.seen[1] == {'market_data': {'btc': 64000}, 'scanner_data': {'signals': 1}}
    assert risk.seen[1] == {'risk_metrics': {'var': 0.1}}
    assert await syncbus.get_state('scanner_data') == {'signals': 2}
    assert syncbus.tick_count == 2 and syncbus.performance_metrics['ticks'] == 2
    assert syncbus.performance_metrics['tick_timeouts'] == 0
    # update_state replaces an entry whole (the ticks' entries stay).
    await syncbus.update_state('market_data', {'eth': 3000})
    assert await syncbus.get_state('market_data') == {'eth': 3000}
    assert await syncbus.get_state('scanner_data') == {'signals': 2}
    await syncbus.close()


async def test_a_failing_agent_is_isolated_and_the_command_interface_shows_it(addr: str) -> None:
    syncbus = HighPerformanceSyncBus()
    scanner = Scanner()
    syncbus.attach('scanner', scanner)
    syncbus.attach('broken', Broken())
    syncbus.attach('risk', Risk())
    # The "old way": attached agents are registered (interests ['all']) at the first tick.
    for _ in range(DEFAULT_CIRCUIT_CONFIG['failure_threshold']):
        await syncbus.tick()
    assert sorted(syncbus.subscriptions) == ['broken', 'risk', 'scanner']
    command_interface = CommandInterface(syncbus)

    # List problematic agents (the guide's debugging commands)
    agents = await command_interface.handle_command('list_agents')
    failing_agents = [a for a in agents['agents'] if a['circuit_open']]
    assert [a['agent_id'] for a in failing_agents] == ['broken']
    assert await syncbus.is_circuit_open('broken') and not await syncbus.is_circuit_open('scanner')

    # The isolated agent is skipped; the others go on.
    await syncbus.tick()
    assert len(scanner.seen) == DEFAULT_CIRCUIT_CONFIG['failure_threshold'] + 1

    async def degraded() -> bool:
        health = await syncbus.get_state('system_health')
        return health['healthy_agents'] < health['total_agents']

    await eventually(degraded, timeout=10, what="system_health counts the isolated agent")
    health = await syncbus.get_state('system_health')
    assert health['total_agents'] == 3 and health['healthy_agents'] == 2
    assert health['health_score'] == 2 / 3
    assert health['performance_metrics']['ticks'] == 6 and 'last_update' in health
    assert health['performance_metrics']['circuit_breaker_activations'] == 1

    # Restart agent circuit breaker
    restarted = await command_interface.handle_command('restart_agent', {'agent_id': 'broken'})
    assert restarted['success'] is True and restarted['agent_id'] == 'broken'
    assert not await syncbus.is_circuit_open('broken')
    assert syncbus.performance_metrics['agent_restarts'] == 1
    await syncbus.close()


async def test_command_interface_commands(addr: str) -> None:
    syncbus = HighPerformanceSyncBus()
    trainer = Scanner()
    syncbus.attach('strategy_trainer', trainer)
    await syncbus.register_agent('strategy_trainer', interests=['trades', 'performance'])
    await syncbus.register_agent('risk_sentinel', interests=['execution_result', 'risk_metrics'])
    command_interface = CommandInterface(syncbus)

    # Get system status
    status = await command_interface.handle_command('status')
    assert status['bus_agents'] == ['risk_sentinel', 'strategy_trainer'] and status['tick_count'] == 0

    # Pause specific agent
    paused = await command_interface.handle_command('pause_agent', {'agent_id': 'risk_sentinel'})
    assert paused['success'] is True
    rows = {a['agent_id']: a for a in (await command_interface.handle_command('list_agents'))['agents']}
    assert rows['risk_sentinel']['status'] == 'paused' and rows['risk_sentinel']['circuit_open'] is False
    # Resume agent
    await command_interface.handle_command('resume_agent', {'agent_id': 'risk_sentinel'})
    rows = {a['agent_id']: a for a in (await command_interface.handle_command('list_agents'))['agents']}
    assert rows['risk_sentinel']['status'] != 'paused'

    # Send custom command to agent: it lands in the agent's command queue
    sent = await command_interface.handle_command('send_command', {
        'agent_id': 'strategy_trainer',
        'command': 'rebalance_weights',
        'command_params': {'min_weight': 0.1}
    })
    assert sent['result'] == {'queued': True}
    assert [(c['command'], c['params']) for c in trainer.command_queue] == [('rebalance_weights', {'min_weight': 0.1})]

    # Get detailed health report (system.health follows the registry within its refresh period)
    async def both_counted() -> bool:
        health = await command_interface.handle_command('health')
        return bool(health['system_health']['total_agents'] == 2)

    await eventually(both_counted, timeout=10, what="the health report counts both agents")
    health = await command_interface.handle_command('health')
    assert {a['agent_id'] for a in health['agents']} == {'strategy_trainer', 'risk_sentinel'}

    # Emergency stop all agents
    stopped = await command_interface.handle_command('emergency_stop')
    assert stopped['success'] is True
    rows = {a['agent_id']: a for a in (await command_interface.handle_command('list_agents'))['agents']}
    assert {r['status'] for r in rows.values()} == {'paused'}

    # Bad input: answered, not raised.
    unknown = await command_interface.handle_command('self_destruct')
    assert unknown['error'] == 'Unknown command: self_destruct' and 'status' in unknown['available_commands']
    missing = await command_interface.handle_command('pause_agent')
    assert 'agent_id' in missing['error'] and missing['reason'] == 'INVALID_ARGUMENT'
    nobody = await command_interface.handle_command('pause_agent', {'agent_id': 'nobody'})
    assert nobody['error'] and nobody['reason']
    await syncbus.close()


async def test_command_interface_uses_the_admin_token(server_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    srv = server_factory(admin_token="s3cret")
    monkeypatch.setenv("LOCKSTEP_ADDR", srv.address)
    monkeypatch.setenv("LOCKSTEP_ADMIN_TOKEN", "s3cret")
    syncbus = HighPerformanceSyncBus()
    await syncbus.register_agent('scanner')
    status = await CommandInterface(syncbus).handle_command('status')
    assert status['bus_agents'] == ['scanner']
    await syncbus.close()


async def test_monitor_system_snippet(addr: str) -> None:
    syncbus = HighPerformanceSyncBus()
    await syncbus.register_agent('trader')
    warnings = []

    # Regular health checks (one round of the guide's loop)
    async def monitor_system(rounds: int) -> None:
        for _ in range(rounds):
            health = await syncbus.get_state('system_health')
            if health['health_score'] < 0.8:
                warnings.append(health)
            await asyncio.sleep(0)

    await monitor_system(1)
    assert warnings == []
    await syncbus.close()


class Slow:
    async def update(self, data: Dict[str, Any]) -> Dict[str, Any]:
        await asyncio.sleep(60)
        return {"late": True}


async def test_tick_bounds_each_agent_by_timeout_per_agent(addr: str) -> None:
    timeout = 0.3
    syncbus = HighPerformanceSyncBus(circuit_config={'timeout_per_agent': timeout})
    assert syncbus.circuit_config['timeout_per_agent'] == timeout
    scanner = Scanner()
    syncbus.attach('slow', Slow())
    syncbus.attach('scanner', scanner)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await syncbus.tick()
    # The round closes at its deadline without the slow agent (well before its 60 s), the others'
    # results merged.
    assert loop.time() - started < 30
    assert syncbus.performance_metrics['tick_timeouts'] == 1
    assert await syncbus.get_state('scanner_data') == {'signals': 1}
    assert await syncbus.get_state('late') is None
    await syncbus.close()


class EnhancedAgent:
    """The migration guide's new agent: processes its commands, then its data, on each update."""

    def __init__(self) -> None:
        self.command_queue: deque = deque()
        self.is_paused = False
        self.memory: List[Dict[str, Any]] = []

    async def _process_commands(self) -> None:
        """Process pending commands"""
        while self.command_queue:
            command_msg = self.command_queue.popleft()
            command = command_msg.get('command')

            if command == 'pause':
                self.is_paused = True
            elif command == 'resume':
                self.is_paused = False
            elif command == 'emergency_stop':
                self.is_paused = True

    async def update(self, data: Dict[str, Any]) -> Dict[str, Any]:
        # Handle commands
        await self._process_commands()

        if self.is_paused:
            return {}

        # Store relevant data in memory
        self.memory.append(data)
        return {'trades': len(self.memory)}


async def test_the_migration_guides_agent_takes_commands_between_ticks(addr: str) -> None:
    sync_bus = HighPerformanceSyncBus()
    agent_instance = EnhancedAgent()
    # New way
    sync_bus.attach('agent_name', agent_instance)
    await sync_bus.register_agent('agent_name', interests=['market_data', 'trades'])
    command_interface = CommandInterface(sync_bus)

    await sync_bus.tick()
    assert await sync_bus.get_state('trades') == 1
    sent = await command_interface.handle_command(
        'send_command', {'agent_id': 'agent_name', 'command': 'pause', 'command_params': {}})
    assert sent['result'] == {'queued': True} and agent_instance.is_paused
    await sync_bus.tick()
    assert await sync_bus.get_state('trades') == 1 and len(agent_instance.memory) == 1  # paused: no work
    await command_interface.handle_command('send_command', {'agent_id': 'agent_name', 'command': 'resume'})
    await sync_bus.tick()
    assert await sync_bus.get_state('trades') == 2
    assert agent_instance.memory[-1] == {'trades': 1}  # its interests' share of the global state
    await sync_bus.close()


async def test_messages_reach_the_update_queues_by_interest(addr: str, client: Any) -> None:
    syncbus = HighPerformanceSyncBus()
    await syncbus.register_agent('scanner', interests=['market_data', 'scanner_data'])
    await syncbus.register_agent('trader')  # ['all']
    async with client.register('exchange') as exchange:
        await exchange.publish('market_data', {'btc': 64000}, confirm=True)
        await exchange.publish('trades', {'id': 1}, confirm=True)

        def routed() -> bool:
            return len(syncbus.update_queues['trader']) == 2 and len(syncbus.update_queues['scanner']) == 1

        await eventually(routed, what="each agent gets the messages its interests name")
    assert [(m['topic'], m['data']) for m in syncbus.update_queues['scanner']] == [('market_data', {'btc': 64000})]
    assert [m['topic'] for m in syncbus.update_queues['trader']] == ['market_data', 'trades']
    assert syncbus.update_queues['trader'][0]['publisher'] == 'exchange'
    await syncbus.close()

"""The seeds' own Python APIs, running on a lockstep server.

Code written against the seeds' classes runs with only its imports changed::

    from lockstep.compat import AgentSynchronizer, SynchronizedAgent                 # core.synchronizer
    from lockstep.compat import SynchronizedAgentRegistry, AgentStatus                # core.sync_registry
    from lockstep.compat import HighPerformanceSyncBus, CommandInterface              # the SyncBus

The classes take the seeds' arguments and defaults and return what the seeds return; coroutines and
plain functions are split exactly as the seeds use them (awaited: ``register_agent``,
``update_agent_status``, ``get_agents_with_sync_capability``, ``heartbeat``, ``sync_with_agents``,
``update_agent_state``, ``get_state``, ``handle_command``, ``tick``; plain: ``get_sync_status``,
``diagnose_sync_issues``, ``force_complete_sync``, ``attach``). They talk to the server at
``$LOCKSTEP_ADDR``, or, when it is unset, to one embedded server per process (``lockstep serve
--in-memory`` on a free loopback port, found through ``$LOCKSTEP_BIN``, ``PATH`` or next to the
package; stopped when the process exits). Operators' calls (``force_complete_sync``, cleanup, the
command interface) send ``$LOCKSTEP_ADMIN_TOKEN`` when it is set. ``python -m
lockstep.compat.sync_diagnostic`` is the seed's diagnostic tool, with its flags.

What lockstep does better stays in the native API (``lockstep.connect``, ``lockstep.Agent``):
typed errors naming who was missing, no silent drops, server-side breakers, durable state. The
compat layer maps it to what the seeds' callers expect (``False`` from a failed sync, ``None``
for an absent entry, ``{'error': ...}`` from a refused command).

Seed public names that differ, and why (every other public name of the seeds is provided with the
seed's meaning):

================================================ ==================================================
seed name                                        in lockstep.compat
================================================ ==================================================
``scripts.ai_agent.core.synchronizer``,          ``lockstep.compat`` (one package; the modules
``...core.sync_registry``, ``sync_diagnostic.py`` ``synchronizer``, ``sync_registry``, ``syncbus``,
                                                 ``command_interface``, ``sync_diagnostic`` keep
                                                 the seeds' concepts apart)
``AgentSynchronizer.get_sync_status(id)``        the server's status dict (``state``, ``required``,
                                                 ``arrived``, ``missing``, ``deadline_ms``...);
                                                 ``None`` for an unknown id. The seed's sync point
                                                 objects live in the server
``SynchronizedAgent.run()``                      not abstract: returns ``{"status": "idle"}``;
                                                 ``validate_config()`` returns ``True``
``sync_with_agents`` → ``False``                 also for a point aborted because a participant
                                                 was lost, one defined otherwise by others, or a
                                                 sync id already used (lockstep never reopens a
                                                 finished point); the typed cause is logged
``SynchronizedAgentRegistry(registry_path)``     accepted, unused: the registry is the server's
                                                 (durable with ``--data-dir``), not a JSON file
``AgentStatus``                                  lockstep's ``ACTIVE``, ``IDLE``, ``BUSY``,
                                                 ``SYNCING``, ``PAUSED`` (``LOST`` is the
                                                 server's); an ``IntEnum`` whose ``str`` is the name
``get_agents_with_sync_capability``              registry entries as dicts (``agent_id``, ``role``,
                                                 ``sync_capabilities``, ``status``,
                                                 ``last_heartbeat`` in seconds, and lockstep's
                                                 fields)
``registry.heartbeat`` and silence               the agent's lease (3 s by default) is renewed by
                                                 ``heartbeat(id)``; unrenewed, the server declares
                                                 the agent lost (``auto_heartbeat=True`` renews it)
``update_agent_state`` with ``None`` values      the key is removed (a state holds no ``null``);
                                                 reading it gives ``None`` either way
``_is_circuit_open``, ``_should_open_circuit``,  the breakers are the server's (per agent, with
``_isolate_agent``, ``_attempt_restart``,        half-open probes and a cap on isolating most of a
``_record_failure``, ``circuit_breakers``,       namespace); ``is_circuit_open(id)`` asks it;
``agent_health``                                 ``circuit_config`` ``failure_threshold`` /
                                                 ``recovery_delay`` are the server's ``[breaker]``
                                                 settings (same defaults): an embedded server the
                                                 bus starts gets them, a running one keeps its own
``tick()`` results                               merged by the server as JSON merge patches by
                                                 agent id into the context key ``syncbus.state``
                                                 (nested dicts merge; the seed's global state is
                                                 that key); an agent that raises reports a
                                                 ``delivery_error``, one that times out is missed:
                                                 both count for its breaker
``global_state``, ``agent_states``, ``lock``,    in the server: ``get_state(name)``,
``_notify_interested_agents``                    ``get_agent_state(id)``; state watches belong to
                                                 the native API (``watch_state``).
                                                 ``update_queues`` holds the messages routed to
                                                 each agent by its interests (last 100), not
                                                 other agents' state deltas
``global_state['market_data']`` deques,          not provided: market data is the application's;
``broadcast_market_update``, ``DataPipeline``,   publish it (``agent.publish``) or keep it in the
``MarketDataProcessor``, ``DataCategorizer``     shared context (``client.context``)
``ConsoleMonitor``                               ``lockstep monitor`` (terminal) and
                                                 ``handle_command('health')``
``MirrorAgent``, ``EnhancedAgent``,              the application's classes: any object with an
``RobustAgent``                                  ``update(data)`` can be attached; commands sent
                                                 to it land in its ``command_queue``
``handle_command`` errors                        an unknown command, missing parameter or refusal
                                                 returns ``{'error', 'reason'}``; ``list_agents``
                                                 lists every agent of the namespace
``send_command``                                 the agent's ``command_queue`` gets
                                                 ``{'command', 'params', 'timestamp'}``; the
                                                 result says ``{'queued': True}``
``DynamicUsageOrchestrator``,                    concepts of the overview document, with no
``DynamicSyncronizationOrchestrator``,           Python API given by the seeds: lockstep's
``SyncSystem``, ``SyncDependency``,              shared context, tasks, traces and tick rounds
``SyncEvent``, ``SyncIncident``                  are the native counterparts
================================================ ==================================================

lockstep's additions: ``close()`` on every class (deregisters at once rather than at lease
expiry), ``address=`` keywords, ``cleanup_completed_syncs()``, ``list_sync_points()``,
``unregister_agent()``, ``get_agent()``, ``list_agents()``, ``get_agent_state()``,
``is_circuit_open()``, ``metrics()`` (``performance_metrics`` with the server's breaker openings).
"""

from __future__ import annotations

from ..models import AgentStatus
from ._connection import server_address
from .sync_registry import SynchronizedAgentRegistry
from .synchronizer import AgentSynchronizer, SynchronizedAgent
from .command_interface import CommandInterface
from .syncbus import DEFAULT_CIRCUIT_CONFIG, HighPerformanceSyncBus

__all__ = [
    "AgentStatus",
    "AgentSynchronizer",
    "CommandInterface",
    "DEFAULT_CIRCUIT_CONFIG",
    "HighPerformanceSyncBus",
    "SynchronizedAgent",
    "SynchronizedAgentRegistry",
    "server_address",
]

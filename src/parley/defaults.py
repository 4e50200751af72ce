"""Every default, once: ``Settings``, the domain's values, the LLM gateway, the store and
the API schemas take theirs from here, so none can drift from another. A leaf module (it
imports nothing), so the settings read it without loading the layers that use it.
"""

from __future__ import annotations

# A turn (ChatLimits; PARLEY_MAX_MESSAGE_CHARS, PARLEY_LLM_HISTORY_MESSAGES, ...)
MAX_MESSAGE_CHARS = 8000
HISTORY_MESSAGES = 40
MAX_REPLY_TOKENS = 512
DEFAULT_MODEL = "llama-3.1-8b-instant"

# A goal's escalation policy, when a goal is created without one (EscalationPolicy)
MAX_TURNS = 20
TRIGGER_PHRASES = ("human", "agent")
ESCALATE_ON_LLM_FAILURE = True
# Consecutive failed LLM turns that escalate: one failure alone leaves it usable.
MAX_LLM_FAILURES = 3

# The LLM gateway and its providers (PARLEY_LLM_*)
LLM_TIMEOUT_SECONDS = 30.0
LLM_MAX_RETRIES = 2
LLM_RETRY_BACKOFF_SECONDS = 0.5
LLM_RETRY_MAX_WAIT_SECONDS = 10.0
# Connections to the LLM provider: one per call in flight.
LLM_MAX_CONNECTIONS = 1000

# The database's connection pool (PARLEY_DB_*): a turn holds a connection only while it
# writes (twice, briefly).
DB_POOL_SIZE = 20
DB_MAX_OVERFLOW = 30

# Database timeouts, in seconds, fit for a web request (PARLEY_DB_*_TIMEOUT_SECONDS):
# opening a connection, one statement (SQLite: waiting for its write lock), and waiting
# for a free pooled connection. Past them the request gets a 503, not a hang.
DB_CONNECT_TIMEOUT_SECONDS = 5.0
DB_STATEMENT_TIMEOUT_SECONDS = 10.0
DB_POOL_TIMEOUT_SECONDS = 5.0

# SQLite's durability (PARLEY_SQLITE_SYNCHRONOUS): under WAL, "normal" syncs at checkpoints,
# not at every commit; a crash of Parley loses nothing, a power loss or OS crash may lose
# the last commits (never corrupts). "full" syncs every commit. Rails' default too.
SQLITE_SYNCHRONOUS = "normal"

# /metrics serves its last rendering (per format) for this long: a scrape storm costs
# one render and one database COUNT per interval (PARLEY_METRICS_CACHE_SECONDS).
METRICS_CACHE_SECONDS = 1.0

# A request body must arrive whole within this; else 408.
BODY_TIMEOUT_SECONDS = 30.0

# The simulated provider's timing (PARLEY_SIM_*)
SIM_TTFT_SECONDS = 0.25
SIM_TOKEN_DELAY_SECONDS = 0.02

# A keyed turn being answered on one replica holds its retries on the others (they wait for
# its reply instead of asking the LLM again). The answering turn renews the lease every
# third of it, so a replica that dies mid-turn holds its retries up this long at most.
ANSWER_LEASE_SECONDS = 10.0

# The live event streams (SSE and the conversation WebSocket): a stream with nothing new
# sends a heartbeat this often (and looks in the event log, in case a wake-up was lost),
# and one replica serves at most this many at once (PARLEY_LIVE_MAX_STREAMS); past it a
# new stream is answered 503 with Retry-After.
LIVE_HEARTBEAT_SECONDS = 15.0
LIVE_MAX_STREAMS = 1000

# A goal's conversation idle this long (no message, no step by anyone) ends: a customer who
# left. Waiting for an agent, it is abandoned. Checked every PARLEY_IDLE_SWEEP_SECONDS.
IDLE_TIMEOUT_SECONDS = 1800
IDLE_SWEEP_SECONDS = 30.0

# Goal outcomes: a goal that judges grades this share of its ended conversations; the
# judge's queue is worked every PARLEY_JUDGE_POLL_SECONDS, this many at once per replica,
# an attempt that fails retried with backoff up to PARLEY_JUDGE_MAX_ATTEMPTS in all.
JUDGE_SAMPLE_RATE = 1.0
JUDGE_POLL_SECONDS = 2.0
JUDGE_CONCURRENCY = 4
JUDGE_MAX_ATTEMPTS = 5
JUDGE_BACKOFF_SECONDS = 30.0

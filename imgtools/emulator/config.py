"""Emulator settings: one frozen dataclass with named defaults.

Every field can be set from the command line (``--token-ttl 60``) or the environment
(``IMGTOOLS_EMULATOR_TOKEN_TTL=60``); see ``imgtools.emulator.__main__``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_REGIONS",
    "DEFAULT_USERS",
    "DEMO_USER",
    "EmulatorConfig",
    "FaultSettings",
    "User",
]

MiB = 1024 * 1024
_REGION_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")

#: Regions an emulator serves unless told otherwise; the first is the default region.
DEFAULT_REGIONS: tuple[str, ...] = ("ORD", "DFW", "IAD")
#: Glance's task_time_to_live default: 48 hours after a task finishes.
DEFAULT_TASK_TTL = 48 * 3600.0
#: Rackspace identity tokens live about 24 hours.
DEFAULT_TOKEN_TTL = 24 * 3600.0
#: Size of the largest seeded image; the others are fractions of it.
DEFAULT_IMAGE_SIZE = 6 * MiB
#: Small segments, so even a demo export makes several ``<uuid>.vhd-0000N`` objects.
DEFAULT_SEGMENT_SIZE = 1 * MiB
#: Copy speed of one export (or import) task, bytes per second.
DEFAULT_EXPORT_SPEED = 4 * MiB
#: Time a new task stays ``pending`` before the worker picks it up.
DEFAULT_PENDING_DELAY = 1.0
#: Largest JSON request body accepted (tasks, identity); larger gets 413.
DEFAULT_MAX_JSON_BODY = 64 * 1024
#: Largest single object PUT, as Cloud Files (5 GiB).
DEFAULT_MAX_OBJECT_SIZE = 5 * 1024 * MiB


@dataclass(frozen=True, slots=True)
class User:
    """An identity user; ``password`` defaults to the API key for ``passwordCredentials``."""

    username: str
    api_key: str
    tenant_id: str
    password: str | None = None
    roles: tuple[str, ...] = ("admin",)

    @property
    def secret_password(self) -> str:
        return self.password if self.password is not None else self.api_key

    def __repr__(self) -> str:  # never show secrets
        return (f"User(username={self.username!r}, tenant_id={self.tenant_id!r}, "
                f"roles={self.roles!r})")

    @classmethod
    def parse(cls, text: str) -> User:
        """``name:api_key:tenant[:role,role]`` as given to ``--user``."""
        parts = text.split(":")
        if len(parts) not in (3, 4) or not all(parts[:3]):
            raise ValueError(f"--user wants name:api_key:tenant[:roles], got {parts[0]!r}...")
        roles = tuple(r for r in parts[3].split(",") if r) if len(parts) == 4 else ("admin",)
        return cls(parts[0], parts[1], parts[2], roles=roles)


#: The demo login every emulator accepts unless given other users.
DEMO_USER = User("demo", "demo-key", "100001")
#: The built-in users: the demo one first, and a second account (another tenant) so an
#: image can move between accounts.
DEFAULT_USERS: tuple[User, ...] = (
    DEMO_USER,
    User("other", "other-key", "100002"),
)


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """Injected faults; all off by default. Changeable at run time via ``/_emulator/faults``."""

    #: Probability that a request is answered 503 without being handled.
    error_503: float = 0.0
    #: Requests per second allowed (per token, or per client address without one); 0 = no limit.
    rate_limit: float = 0.0
    #: Status used when over the rate limit: 413 (Rackspace "overLimit") or 429.
    rate_limit_status: int = 413
    #: Added latency, uniformly drawn from [latency_min, latency_max] seconds.
    latency_min: float = 0.0
    latency_max: float = 0.0
    #: Probability that the connection is closed before the request is handled.
    drop_before: float = 0.0
    #: Probability that the request is handled but the connection closes instead of answering
    #: (a lost response: the task exists, the client never hears of it).
    drop_after: float = 0.0
    #: Probability that a response body stops halfway and the connection closes (a connection
    #: lost in the middle of a download). Bodies of one byte or less are never cut.
    cut_body: float = 0.0
    #: Comma-separated path prefixes the faults apply to; empty = every API path.
    paths: str = ""
    #: Methods the faults apply to (comma-separated); empty = all.
    methods: str = ""
    #: Exports store one segment with a flipped byte (the listing keeps the right hash).
    corrupt_segment: bool = False
    #: Exports lose their second segment after finishing (downloads come back short).
    missing_segment: bool = False
    #: Probability that an export or import task fails with the "unknown error" message.
    task_failure: float = 0.0
    #: Seed of the fault draws: the same seed gives the same faults to the same sequence of
    #: requests (a reproducible run). 0 = unpredictable. While it is set, every change of the
    #: settings (setting it again, too) restarts the draws.
    seed: int = 0

    def replace(self, **changes: Any) -> FaultSettings:
        return dataclasses.replace(self, **changes)

    def active(self) -> bool:
        return any((self.error_503, self.rate_limit, self.latency_max, self.drop_before,
                    self.drop_after, self.cut_body))


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """Everything the emulator can be told; the defaults suit a demo."""

    users: tuple[User, ...] = DEFAULT_USERS
    #: Seconds a token lives (set it short to exercise re-authentication).
    token_ttl: float = DEFAULT_TOKEN_TTL
    #: Regions served, each with its own images, tasks and Cloud Files accounts. The first is
    #: the default region: the user's default in the catalog, served at the root URLs.
    regions: tuple[str, ...] = DEFAULT_REGIONS
    image_size: int = DEFAULT_IMAGE_SIZE
    segment_size: int = DEFAULT_SEGMENT_SIZE
    export_speed: float = DEFAULT_EXPORT_SPEED
    pending_delay: float = DEFAULT_PENDING_DELAY
    #: Seconds a finished task is kept before it is purged (then 404).
    task_ttl: float = DEFAULT_TASK_TTL
    #: Seconds between two steps of the task worker.
    tick: float = 0.05
    #: Seed of the deterministic image content and history.
    seed: int = 0
    #: Finished tasks inserted into the first user's tenant at start (once per data dir).
    seed_tasks: int = 0
    #: What a task caught in ``processing`` by a crash does at the next start: resume | fail.
    crash_recovery: str = "resume"
    #: ``message`` of a task with nothing to say: "" (live Glance) or "None" (Rackspace docs).
    empty_message: str = ""
    max_json_body: int = DEFAULT_MAX_JSON_BODY
    max_object_size: int = DEFAULT_MAX_OBJECT_SIZE
    faults: FaultSettings = field(default_factory=FaultSettings)

    def __post_init__(self) -> None:
        problems = []
        if self.segment_size <= 0:
            problems.append("segment_size must be positive")
        if self.export_speed <= 0:
            problems.append("export_speed must be positive")
        if self.image_size < 1024:
            problems.append("image_size must be at least 1024 bytes")
        if self.crash_recovery not in ("resume", "fail"):
            problems.append("crash_recovery must be 'resume' or 'fail'")
        if self.faults.rate_limit_status not in (413, 429):
            problems.append("rate_limit_status must be 413 or 429")
        if not self.users:
            problems.append("at least one user is needed")
        if not self.regions:
            problems.append("at least one region is needed")
        if any(not _REGION_NAME.fullmatch(r) for r in self.regions):
            problems.append("region names are letters, digits, '-' and '_'")
        if len({r.upper() for r in self.regions}) != len(self.regions):
            problems.append("region names must differ (case aside)")
        if problems:
            raise ValueError("; ".join(problems))

    def replace(self, **changes: Any) -> EmulatorConfig:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        """Serialise (secrets included: the file lives in the private data dir)."""
        data = dataclasses.asdict(self)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> EmulatorConfig:
        data = json.loads(text)
        data["users"] = tuple(
            User(u["username"], u["api_key"], u["tenant_id"], u.get("password"),
                 tuple(u.get("roles", ("admin",))))
            for u in data.get("users", ())
        ) or DEFAULT_USERS
        data["regions"] = tuple(data.get("regions", DEFAULT_REGIONS))
        data["faults"] = FaultSettings(**data.get("faults", {}))
        return cls(**data)

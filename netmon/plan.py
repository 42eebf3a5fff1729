"""The test plan: what a probe measures, how often, and its monthly data budgets.

It arrives two ways and is validated with these models both times: from the agent's file
config (``[tests.<name>]`` tables and the links' ``budget_mb``, see ``agent/config.py``)
and as the payload of a signed remote config (``agent/remote_config.py``). The NOC tools
(``collector/fleet``) validate a plan with the same :class:`TestPlan` before signing it,
which is why it lives in the core: the collector never imports the agent.

Every ``[tests.<name>]`` table has scheduling keys (see :class:`TestSpec`) and the
method's own options, validated by the method's declared options model
(:func:`netmon.methods.declared`). :meth:`TestPlan.problems` checks a plan against the
links of the probe that will run it. See ``docs/agent.md`` for the reference.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from netmon.contract import LinkName
from netmon.methods import Kind, MethodOptions, declared
from netmon.planlinks import MB as MB  # where the scheduler and budgets take it
from netmon.planlinks import PlanLinks
from netmon.settings import describe_errors

TestName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]

#: Keys of a ``[tests.<name>]`` table that belong to the scheduler, not to the method.
SCHEDULE_KEYS = frozenset({"method", "every_s", "jitter_s", "links", "enabled",
                           "expected_mb", "defer_when_busy_mbps", "defer_s", "defer_max"})


class TestSpec(BaseModel):
    """One ``[tests.<name>]`` table: scheduling keys plus the method's own options.

    Unknown keys are passed to the method's ``Options`` model, which rejects the ones it
    does not know, so a typo is still named.
    """

    __test__ = False  # not a pytest class, despite the name
    model_config = ConfigDict(extra="allow", frozen=True)

    method: str = Field(description="a method declared in netmon.methods.DECLARATIONS")
    # Not ``interval_s``: latency methods use that name for the gap between probes.
    every_s: float = Field(3600.0, ge=1, le=31 * 86400,
                           description="mean time between two runs on one link")
    jitter_s: float | None = Field(
        None, ge=0, description="each run moves by a random amount in [-jitter, +jitter]; "
                                "default a tenth of the interval, at most 5 minutes")
    links: tuple[LinkName, ...] | None = Field(
        None, min_length=1, description="links it runs on (default: every link)")
    enabled: bool = True
    expected_mb: float | None = Field(
        None, gt=0, description="data one run moves, used for the budget until past "
                                "results give a measured figure")

    defer_when_busy_mbps: float | None = Field(
        None, gt=0, description="throughput tests only: when the link's interface already "
                                "carries more than this (users' traffic), postpone the test")
    defer_s: float = Field(300.0, ge=1, le=86400, description="how long to postpone")
    defer_max: int = Field(3, ge=0, le=100,
                           description="postpone at most this many times in a row, then run")

    _options: MethodOptions = PrivateAttr()

    @model_validator(mode="wrap")
    @classmethod
    def _known_method_wrap(cls, data: Any, handler: Any) -> Any:
        # KeyError from declared() is not a ValueError; turn it into one so pydantic
        # reports it under ``tests.<name>.method`` with the list of known methods.
        if isinstance(data, dict) and isinstance(data.get("method"), str):
            try:
                declared(data["method"])
            except KeyError as exc:
                raise ValueError(f"method: {exc.args[0]}") from None
        return handler(data)

    @model_validator(mode="after")
    def _options_valid(self) -> TestSpec:
        if self.jitter_s is not None and self.jitter_s > self.every_s / 2:
            raise ValueError(f"jitter_s ({self.jitter_s:g}) must be at most half of "
                             f"every_s ({self.every_s:g})")
        try:
            self._options = declared(self.method).options.model_validate(self.model_extra or {})
        except ValidationError as exc:
            # One "option: why" per line; the agent's load() turns them into
            # tests.<name>.<option>.
            raise ValueError("\n".join(
                p.replace(": Value error, ", ": ") for p in describe_errors(exc))) from None
        return self

    @property
    def options(self) -> MethodOptions:
        """The method's validated options."""
        return self._options

    @property
    def kind(self) -> Kind:
        """The method's kind (``throughput``, ``latency`` or ``check``)."""
        return declared(self.method).kind

    @property
    def jitter(self) -> float:
        """The effective jitter in seconds."""
        return self.jitter_s if self.jitter_s is not None else min(self.every_s / 10, 300.0)

    def links_on(self, all_links: list[str]) -> list[str]:
        """The link names this test runs on."""
        return list(self.links) if self.links is not None else list(all_links)


class TestPlan(PlanLinks, BaseModel):
    """What to measure: the tests and the monthly data budgets (MB) per link.

    The same model validates the file's tests and a remote plan; check it against the
    probe's links with :meth:`problems` before applying it.
    """

    __test__ = False
    model_config = ConfigDict(extra="forbid", frozen=True)

    tests: dict[TestName, TestSpec] = Field(default_factory=dict)
    budgets_mb: dict[LinkName, float] = Field(
        default_factory=dict, description="monthly data budget (MB) per metered link")

    @field_validator("budgets_mb")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        for link, mb in value.items():
            if mb <= 0:
                raise ValueError(f"budget of link {link!r} must be > 0 MB (got {mb!r})")
        return value

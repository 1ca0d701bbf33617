"""Base class for every settings section: validated once, then frozen."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A settings section. Unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

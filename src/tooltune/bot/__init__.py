"""The bot: a policy (a model that writes the next turn), a session (the turn loop over the local hotel database),
a terminal chat, an OpenAI-compatible server and a web chat page (`tooltune chat`, `tooltune serve`)."""

from tooltune.bot.policy import GeneratorPolicy, LockedPolicy, Policy, load_policy
from tooltune.bot.session import Exchange, Search, Session, SessionConfig

__all__ = ["Exchange", "GeneratorPolicy", "LockedPolicy", "Policy", "Search", "Session", "SessionConfig",
           "load_policy"]

"""Users' reactions as data (lecture 12.2): the bot's conversations and the feedback on its turns, stored in an
embedded SQLite database while `tooltune serve` and `tooltune chat` run (`database`, written by `store`), then
exported as dialogues to train on, tasks to annotate and a report (`export`, `tooltune data feedback export`)."""

from tooltune.feedback.database import StoredConversation, StoredTurn, default_path, read_conversations
from tooltune.feedback.store import RATINGS, Correction, Feedback, FeedbackStore, UnknownCompletion

__all__ = ["Correction", "Feedback", "FeedbackStore", "RATINGS", "StoredConversation", "StoredTurn",
           "UnknownCompletion", "default_path", "read_conversations"]

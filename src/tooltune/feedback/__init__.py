"""Users' reactions as data (lecture 12.2): the bot's conversations and the feedback on its turns, stored in an
embedded SQLite database while `tooltune serve` and `tooltune chat` run (`store`), then exported as dialogues to
train on, tasks to annotate and a report (`export`, `tooltune data feedback export`)."""

from tooltune.feedback.store import (RATINGS, Correction, Feedback, FeedbackStore, StoredConversation, StoredTurn,
                                     UnknownCompletion, default_path, read_conversations)

__all__ = ["Correction", "Feedback", "FeedbackStore", "RATINGS", "StoredConversation", "StoredTurn",
           "UnknownCompletion", "default_path", "read_conversations"]

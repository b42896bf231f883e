"""A user's support-desk programs, in the shapes the optimizer matrix must handle.

- :class:`Classify`: one ``dspy.Predict``;
- :class:`ThinkThenClassify`: one ``dspy.ChainOfThought``;
- :class:`TriageAndDraft`: two predictors whose inputs differ, the second fed by the first's output
  (``classify`` sees ``email`` only; ``draft`` sees ``email``, ``customer_name`` and ``intent``).
"""

from typing import Literal

import dspy

Intent = Literal["refund", "shipping", "cancel", "bug", "pricing"]


class ClassifyEmail(dspy.Signature):
    """Classify what the customer's email asks for."""

    email: str = dspy.InputField(desc="the customer's email, verbatim")
    intent: Intent = dspy.OutputField()


class DraftReply(dspy.Signature):
    """Draft the reply an agent sends to the customer."""

    email: str = dspy.InputField()
    customer_name: str = dspy.InputField()
    intent: str = dspy.InputField(desc="what the email asks for")
    reply: str = dspy.OutputField()


class Classify(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.classify = dspy.Predict(ClassifyEmail)

    def forward(self, email: str) -> dspy.Prediction:
        return self.classify(email=email)


class ThinkThenClassify(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.classify = dspy.ChainOfThought(ClassifyEmail)

    def forward(self, email: str) -> dspy.Prediction:
        return self.classify(email=email)


class TriageAndDraft(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.classify = dspy.Predict(ClassifyEmail)
        self.draft = dspy.ChainOfThought(DraftReply)

    def forward(self, email: str, customer_name: str) -> dspy.Prediction:
        intent = self.classify(email=email).intent
        reply = self.draft(email=email, customer_name=customer_name, intent=intent).reply
        return dspy.Prediction(intent=intent, reply=reply)


class TriageAndDraftFinalOnly(TriageAndDraft):
    """The same two steps, returning only the draft's prediction: its traces never log ``intent``,
    so no training example can show ``classify`` (or ``draft``, which reads it) a labeled intent."""

    def forward(self, email: str, customer_name: str) -> dspy.Prediction:
        intent = self.classify(email=email).intent
        return self.draft(email=email, customer_name=customer_name, intent=intent)


POLICIES = {
    "refund": "Refunds are paid back to the original card within five days.",
    "shipping": "Parcels ship within two days; tracking links arrive by email.",
    "cancel": "Accounts can be closed from the settings page at any time.",
}


class AnswerFromPolicies(dspy.Module):
    """Retrieval computed in ``forward``: the predictor reads ``context``, which is no program input.
    Returning it beside the answer is what lets its traces teach the predictor (docs/optimizers.md)."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = dspy.ChainOfThought("context, question -> answer")

    def forward(self, question: str) -> dspy.Prediction:
        words = set(question.lower().split())
        context = next((text for topic, text in POLICIES.items() if topic in words), "No policy matched.")
        return dspy.Prediction(answer=self.answer(context=context, question=question).answer, context=context)

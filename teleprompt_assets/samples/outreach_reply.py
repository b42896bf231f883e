"""``outreach_reply``: write the reply a sales rep sends to a prospect. Outcome-only labels.

There is no ground-truth reply; what is known later is whether the prospect answered
(``reply_rate``) and how much they engaged (``engagement``). The metric is therefore an outcome
model trained on the window's logged replies (see :mod:`teleprompt_assets.training.outcome_model`).
"""

import dspy


class WriteReply(dspy.Signature):
    """Write a short, friendly reply to a prospect who contacted sales."""

    prospect_message: str = dspy.InputField(desc="what the prospect wrote")
    company: str = dspy.InputField(desc="the prospect's company")
    reply: str = dspy.OutputField(desc="the reply to send")


class OutreachReply(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.write = dspy.Predict(WriteReply)

    def forward(self, prospect_message: str, company: str) -> dspy.Prediction:
        return self.write(prospect_message=prospect_message, company=company)

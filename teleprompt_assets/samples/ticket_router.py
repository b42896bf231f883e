"""``ticket_router``: route a customer message to the support queue that should handle it."""

from typing import Literal

import dspy

QUEUES = ("billing", "technical", "account", "shipping", "sales")


class RouteTicket(dspy.Signature):
    """Route a customer support message to the queue that should handle it."""

    message: str = dspy.InputField(desc="the customer's message, verbatim")
    queue: Literal["billing", "technical", "account", "shipping", "sales"] = dspy.OutputField()


class TicketRouter(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.route = dspy.Predict(RouteTicket)

    def forward(self, message: str) -> dspy.Prediction:
        return self.route(message=message)

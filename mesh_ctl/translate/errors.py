"""Errors of the translation: a field Istio accepts that minimesh's data plane cannot do (yet)."""

from __future__ import annotations


class TranslationError(ValueError):
    """``path`` is the field path inside the resource (``spec.http[0].fault``); ``resource`` names it
    (``VirtualService default/payment``) when known. The store uses it to refuse a resource."""

    def __init__(self, path: str, reason: str, resource: str = "") -> None:
        self.path = path
        self.reason = reason
        self.resource = resource
        where = f"{resource}: " if resource else ""
        super().__init__(f"{where}{path}: {reason}")

    def in_resource(self, resource: str) -> TranslationError:
        """The same error, naming the resource it came from."""
        return self if self.resource else TranslationError(self.path, self.reason, resource)


class UnknownProxyError(LookupError):
    """A node that is neither a registered workload's sidecar nor a proxyless gRPC client."""

# mypy: disable-error-code="type-arg"
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FailPoint(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAIL_BEFORE_HEADERS: _ClassVar[FailPoint]
    FAIL_AFTER_HEADERS: _ClassVar[FailPoint]
    FAIL_AFTER_FIRST_REPLY: _ClassVar[FailPoint]

class PaymentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_STATE_UNSPECIFIED: _ClassVar[PaymentState]
    AUTHORIZED: _ClassVar[PaymentState]
    CAPTURED: _ClassVar[PaymentState]
    SETTLED: _ClassVar[PaymentState]
    PENDING_REVIEW: _ClassVar[PaymentState]
    REFUNDED: _ClassVar[PaymentState]
FAIL_BEFORE_HEADERS: FailPoint
FAIL_AFTER_HEADERS: FailPoint
FAIL_AFTER_FIRST_REPLY: FailPoint
PAYMENT_STATE_UNSPECIFIED: PaymentState
AUTHORIZED: PaymentState
CAPTURED: PaymentState
SETTLED: PaymentState
PENDING_REVIEW: PaymentState
REFUNDED: PaymentState

class Control(_message.Message):
    __slots__ = ("delay_ms", "fail_with_code", "fail_with_message", "fail_at", "echo_payload", "response_bytes")
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    FAIL_WITH_CODE_FIELD_NUMBER: _ClassVar[int]
    FAIL_WITH_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FAIL_AT_FIELD_NUMBER: _ClassVar[int]
    ECHO_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_BYTES_FIELD_NUMBER: _ClassVar[int]
    delay_ms: int
    fail_with_code: int
    fail_with_message: str
    fail_at: FailPoint
    echo_payload: bool
    response_bytes: int
    def __init__(self, delay_ms: _Optional[int] = ..., fail_with_code: _Optional[int] = ..., fail_with_message: _Optional[str] = ..., fail_at: _Optional[_Union[FailPoint, str]] = ..., echo_payload: _Optional[bool] = ..., response_bytes: _Optional[int] = ...) -> None: ...

class ChargeRequest(_message.Message):
    __slots__ = ("payment_id", "customer_id", "amount", "currency", "description", "payload", "control")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    customer_id: str
    amount: int
    currency: str
    description: str
    payload: bytes
    control: Control
    def __init__(self, payment_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., amount: _Optional[int] = ..., currency: _Optional[str] = ..., description: _Optional[str] = ..., payload: _Optional[bytes] = ..., control: _Optional[_Union[Control, _Mapping]] = ...) -> None: ...

class ChargeReply(_message.Message):
    __slots__ = ("payment_id", "state", "amount", "fee", "currency", "message", "version", "served_by", "payload")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    FEE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    state: PaymentState
    amount: int
    fee: int
    currency: str
    message: str
    version: str
    served_by: str
    payload: bytes
    def __init__(self, payment_id: _Optional[str] = ..., state: _Optional[_Union[PaymentState, str]] = ..., amount: _Optional[int] = ..., fee: _Optional[int] = ..., currency: _Optional[str] = ..., message: _Optional[str] = ..., version: _Optional[str] = ..., served_by: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class RefundRequest(_message.Message):
    __slots__ = ("payment_id", "amount", "reason", "payload", "control")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    amount: int
    reason: str
    payload: bytes
    control: Control
    def __init__(self, payment_id: _Optional[str] = ..., amount: _Optional[int] = ..., reason: _Optional[str] = ..., payload: _Optional[bytes] = ..., control: _Optional[_Union[Control, _Mapping]] = ...) -> None: ...

class RefundReply(_message.Message):
    __slots__ = ("refund_id", "payment_id", "amount", "currency", "message", "version", "served_by", "payload")
    REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    refund_id: str
    payment_id: str
    amount: int
    currency: str
    message: str
    version: str
    served_by: str
    payload: bytes
    def __init__(self, refund_id: _Optional[str] = ..., payment_id: _Optional[str] = ..., amount: _Optional[int] = ..., currency: _Optional[str] = ..., message: _Optional[str] = ..., version: _Optional[str] = ..., served_by: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class GetPaymentRequest(_message.Message):
    __slots__ = ("payment_id", "payload", "control")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    payload: bytes
    control: Control
    def __init__(self, payment_id: _Optional[str] = ..., payload: _Optional[bytes] = ..., control: _Optional[_Union[Control, _Mapping]] = ...) -> None: ...

class Payment(_message.Message):
    __slots__ = ("payment_id", "customer_id", "amount", "fee", "currency", "state", "refunded_amount", "message", "version", "served_by", "payload")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    FEE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    customer_id: str
    amount: int
    fee: int
    currency: str
    state: PaymentState
    refunded_amount: int
    message: str
    version: str
    served_by: str
    payload: bytes
    def __init__(self, payment_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., amount: _Optional[int] = ..., fee: _Optional[int] = ..., currency: _Optional[str] = ..., state: _Optional[_Union[PaymentState, str]] = ..., refunded_amount: _Optional[int] = ..., message: _Optional[str] = ..., version: _Optional[str] = ..., served_by: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class ListPaymentsRequest(_message.Message):
    __slots__ = ("customer_id", "limit", "interval_ms", "payload", "control")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    limit: int
    interval_ms: int
    payload: bytes
    control: Control
    def __init__(self, customer_id: _Optional[str] = ..., limit: _Optional[int] = ..., interval_ms: _Optional[int] = ..., payload: _Optional[bytes] = ..., control: _Optional[_Union[Control, _Mapping]] = ...) -> None: ...

class WatchPaymentRequest(_message.Message):
    __slots__ = ("payment_id", "updates", "interval_ms", "payload", "control")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    updates: int
    interval_ms: int
    payload: bytes
    control: Control
    def __init__(self, payment_id: _Optional[str] = ..., updates: _Optional[int] = ..., interval_ms: _Optional[int] = ..., payload: _Optional[bytes] = ..., control: _Optional[_Union[Control, _Mapping]] = ...) -> None: ...

class PaymentEvent(_message.Message):
    __slots__ = ("payment_id", "seq", "state", "message", "version", "served_by", "payload")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    seq: int
    state: PaymentState
    message: str
    version: str
    served_by: str
    payload: bytes
    def __init__(self, payment_id: _Optional[str] = ..., seq: _Optional[int] = ..., state: _Optional[_Union[PaymentState, str]] = ..., message: _Optional[str] = ..., version: _Optional[str] = ..., served_by: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class BatchSummary(_message.Message):
    __slots__ = ("count", "total_amount", "total_fee", "currency", "payment_ids", "message", "version", "served_by", "payload")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FEE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_IDS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    count: int
    total_amount: int
    total_fee: int
    currency: str
    payment_ids: _containers.RepeatedScalarFieldContainer[str]
    message: str
    version: str
    served_by: str
    payload: bytes
    def __init__(self, count: _Optional[int] = ..., total_amount: _Optional[int] = ..., total_fee: _Optional[int] = ..., currency: _Optional[str] = ..., payment_ids: _Optional[_Iterable[str]] = ..., message: _Optional[str] = ..., version: _Optional[str] = ..., served_by: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class ServerStatsRequest(_message.Message):
    __slots__ = ("reset",)
    RESET_FIELD_NUMBER: _ClassVar[int]
    reset: bool
    def __init__(self, reset: _Optional[bool] = ...) -> None: ...

class ServerStats(_message.Message):
    __slots__ = ("version", "served_by", "uptime_s", "total_calls", "calls_by_method", "cancellations", "cancelled_by_method", "deadline_cancellations", "injected_errors", "requested_failures")
    class CallsByMethodEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class CancelledByMethodEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CALLS_FIELD_NUMBER: _ClassVar[int]
    CALLS_BY_METHOD_FIELD_NUMBER: _ClassVar[int]
    CANCELLATIONS_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_BY_METHOD_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_CANCELLATIONS_FIELD_NUMBER: _ClassVar[int]
    INJECTED_ERRORS_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_FAILURES_FIELD_NUMBER: _ClassVar[int]
    version: str
    served_by: str
    uptime_s: float
    total_calls: int
    calls_by_method: _containers.ScalarMap[str, int]
    cancellations: int
    cancelled_by_method: _containers.ScalarMap[str, int]
    deadline_cancellations: int
    injected_errors: int
    requested_failures: int
    def __init__(self, version: _Optional[str] = ..., served_by: _Optional[str] = ..., uptime_s: _Optional[float] = ..., total_calls: _Optional[int] = ..., calls_by_method: _Optional[_Mapping[str, int]] = ..., cancellations: _Optional[int] = ..., cancelled_by_method: _Optional[_Mapping[str, int]] = ..., deadline_cancellations: _Optional[int] = ..., injected_errors: _Optional[int] = ..., requested_failures: _Optional[int] = ...) -> None: ...

"""What every network sink and the ground station share.

    wire.py       wire format v1: topics, ids, fire/state/ack messages, masks as PNG
    schema.py     the wire schema (schemas/wire-v1.schema.json) and its validator
    gate.py       FireGate: which results become fire messages (rate limit, material change)
    outbox.py     the SQLite store of store-and-forward
    forwarder.py  the thread that drains an outbox through a transport (window, resend, acks)
    sink.py       NetworkSink: the base of the zenoh and mqtt sinks
"""

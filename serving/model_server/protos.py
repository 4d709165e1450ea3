"""Message classes for the TF Serving protos the ``tensorflow-serving-api`` package does not
ship (``BatchingParameters``, ``MonitoringConfig``): each is declared field by field from
TF Serving's ``.proto`` (same names and numbers, so its text files parse unchanged) and
registered once in protobuf's default pool."""
from __future__ import annotations


def message_class(file, full_name: str):
    """The class of ``full_name`` from the ``FileDescriptorProto`` ``file``, adding the file
    to the default pool the first time."""
    from google.protobuf import descriptor_pool, message_factory
    pool = descriptor_pool.Default()
    try:
        descriptor = pool.FindMessageTypeByName(full_name)
    except KeyError:
        pool.Add(file)
        descriptor = pool.FindMessageTypeByName(full_name)
    return message_factory.GetMessageClass(descriptor)


__all__ = ["message_class"]

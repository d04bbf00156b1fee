"""The Meshtastic wire format: the protobuf message definitions every transport speaks, imported once here.

Only the definitions (`meshtastic.protobuf`), not the client library: the `meshtastic` client and pubsub stay
in `meshtastic_lib.py`; the MQTT transport encodes and decodes the same messages without them.
"""

from meshtastic.protobuf import config_pb2, mesh_pb2, mqtt_pb2, portnums_pb2, telemetry_pb2

__all__ = ["config_pb2", "mesh_pb2", "mqtt_pb2", "portnums_pb2", "telemetry_pb2"]

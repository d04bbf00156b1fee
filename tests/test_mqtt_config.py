"""The [mqtt] section: the acceptance run's env names work, bad values name their key, secrets stay secret."""

from __future__ import annotations

import pytest

from meshbot.core.config import ConfigError, load_config
from meshbot.radios import TRANSPORTS

KEY = "oAMwYz5jUi+KTYHsbZ0eZhf2yP/TpMaYIpU31E5SInc="


def test_the_acceptance_env_names_configure_the_transport() -> None:
    cfg = load_config(
        environ={
            "MESHBOT_RADIO_TRANSPORT": "mqtt",
            "MESHBOT_MQTT_HOST": "broker.example",
            "MESHBOT_MQTT_PORT": "8883",
            "MESHBOT_MQTT_ROOT": "msh/EU_868",
            "MESHBOT_MQTT_CHANNEL": "MediumFast",
            "MESHBOT_MQTT_PSK": "AQ==",
            "MESHBOT_MQTT_NODE_ID": "!b07b0001",
            "MESHBOT_MQTT_PRIVATE_KEY": KEY,
            "MESHBOT_MQTT_PASSWORD": "hunter2",
        }
    )
    m = cfg.mqtt
    assert (m.host, m.port, m.root, m.channel, m.node_id) == (
        "broker.example",
        8883,
        "msh/EU_868",
        "MediumFast",
        "!b07b0001",
    )
    assert m.private_key is not None and m.private_key.get_secret_value() == KEY
    assert KEY not in repr(cfg) and "hunter2" not in repr(cfg) and "hunter2" not in str(m)
    TRANSPORTS.check(cfg.radio.transport)  # registered


@pytest.mark.parametrize(
    ("name", "value", "key"),
    [
        ("MESHBOT_MQTT_PSK", "not base64!", "mqtt.psk"),
        ("MESHBOT_MQTT_PSK", "AAAA", "mqtt.psk"),  # 3 bytes: not a PSK size
        ("MESHBOT_MQTT_NODE_ID", "!zz", "mqtt.node_id"),
        ("MESHBOT_MQTT_PRIVATE_KEY", "c2VjcmV0", "mqtt.private_key"),
        ("MESHBOT_MQTT_CHANNEL", "Long/Fast", "mqtt.channel"),
        ("MESHBOT_MQTT_ROOT", "msh/#", "mqtt.root"),
        ("MESHBOT_MQTT_PORT", "0", "mqtt.port"),
    ],
)
def test_a_bad_value_names_its_key_and_never_echoes_a_secret(name: str, value: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={name: value})
    message = str(caught.value)
    assert message.startswith(key), message
    if "PRIVATE_KEY" in name:
        assert value not in message

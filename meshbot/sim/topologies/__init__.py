"""The bundled virtual mesh topologies, found by name (`demo`, `city`) with importlib.resources."""

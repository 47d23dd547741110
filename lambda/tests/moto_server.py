"""moto server for the acceso-cloud tests: loopback, a port of the OS's choosing, recording on.

Prints the port on stdout once it answers, then serves until stdin closes (the test process
exits), so no server outlives its tests.
"""
import sys
import urllib.request

try:
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
except ImportError as e:  # said plainly to the test, which fails with it
    print(f"error: moto server is not importable ({e}); pip install 'moto[server]'", flush=True)
    sys.exit(3)

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=10) as r:
    r.read()
print(port, flush=True)
sys.stdin.read()
server.stop()

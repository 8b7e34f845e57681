"""Source URI -> GStreamer pipeline description (pure functions: tested with a fake element registry).

Every description ends in the shared RGB appsink (runtime.gst.APPSINK) named `sink`.
"""

from __future__ import annotations

from firespotter.runtime.errors import SourceError
from firespotter.runtime.gst import APPSINK, DEPAYLOADERS, ElementRegistry, decode_chain, quote  # noqa: F401
from firespotter.runtime.sources import SourceURI, int_param


def codec_param(uri: SourceURI) -> str:
    codec = uri.params.get("codec", "h264").lower()
    if codec not in DEPAYLOADERS:
        raise SourceError(f"{uri.raw}: codec={codec!r} is not supported; use h264 or h265")
    return codec


def raw_caps(uri: SourceURI, memory: str = "") -> str:
    """video/x-raw caps from width/height/fps parameters (each optional)."""
    caps = f"video/x-raw{memory}"
    for key, field in (("width", "width"), ("height", "height")):
        if key in uri.params:
            caps += f",{field}={int_param(uri, key, 0, minimum=16)}"
    if "fps" in uri.params:
        caps += f",framerate={int_param(uri, 'fps', 30, minimum=1)}/1"
    return caps


def file_pipeline(path: str, codec: str, registry: ElementRegistry) -> str:
    """A container file. H.264/H.265 go through parsebin and the best decoder here; other codecs through
    decodebin (whatever the installed plugins can do)."""
    src = f"filesrc location={quote(path)}"
    if codec in DEPAYLOADERS:
        return f"{src} ! parsebin ! {decode_chain(codec, registry)} ! {APPSINK}"
    return f"{src} ! decodebin ! {APPSINK}"


def v4l2_pipeline(uri: SourceURI) -> str:
    device = uri.location or "/dev/video0"
    if not device.startswith("/"):
        device = "/" + device
    if uri.params.get("format", "").lower() in ("mjpeg", "mjpg", "jpeg"):
        caps = raw_caps(uri).replace("video/x-raw", "image/jpeg", 1)
        return f"v4l2src device={quote(device)} ! {caps} ! jpegdec ! {APPSINK}"
    return f"v4l2src device={quote(device)} ! {raw_caps(uri)} ! {APPSINK}"


def csi_pipeline(uri: SourceURI) -> str:
    """Jetson CSI camera through nvarguscamerasrc (NVMM memory), converted by nvvidconv."""
    try:
        sensor = int(uri.location or "0")
    except ValueError:
        raise SourceError(f"{uri.raw}: csi://N needs a sensor number, e.g. csi://0") from None
    caps = raw_caps(uri, "(memory:NVMM)")
    return (f"nvarguscamerasrc sensor-id={sensor} ! {caps} ! nvvidconv ! video/x-raw,format=BGRx ! {APPSINK}")


def rtsp_pipeline(uri: SourceURI, registry: ElementRegistry) -> str:
    codec = codec_param(uri)
    latency = int_param(uri, "latency", 200)
    transport = uri.params.get("transport", "tcp").lower()
    protocols = {"tcp": "tcp", "udp": "udp", "auto": "tcp+udp+udp-mcast"}.get(transport)
    if protocols is None:
        raise SourceError(f"{uri.raw}: transport={transport!r}; use tcp, udp or auto")
    query = uri.raw.split("?", 1)
    # Our own parameters are not the server's: strip them from the URL handed to rtspsrc.
    ours = {"codec", "latency", "transport", "stall_timeout", "connect_timeout", "max_backoff", "reconnect"}
    rest = "&".join(p for p in query[1].split("&") if p.split("=", 1)[0] not in ours) if len(query) > 1 else ""
    url = query[0] + (f"?{rest}" if rest else "")
    return (f"rtspsrc location={quote(url)} latency={latency} protocols={protocols} drop-on-latency=true "
            f"! {DEPAYLOADERS[codec]} ! {decode_chain(codec, registry)} ! {APPSINK}")


def rtp_endpoint(uri: SourceURI) -> tuple[str, int]:
    """rtp://@:5000 (any address), rtp://127.0.0.1:5000 or rtp://239.0.0.1:5000 (multicast group)."""
    host, _, port = uri.location.rpartition(":")
    host = host.strip("/") or "@"
    try:
        port_n = int(port.strip("/"))
    except ValueError:
        raise SourceError(f"{uri.raw}: no port; use rtp://@:PORT") from None
    if not 0 < port_n < 65536:
        raise SourceError(f"{uri.raw}: port {port_n} is out of range")
    return ("0.0.0.0" if host == "@" else host), port_n


def rtp_pipeline(uri: SourceURI, registry: ElementRegistry) -> str:
    codec = codec_param(uri)
    address, port = rtp_endpoint(uri)
    payload = int_param(uri, "payload", 96)
    latency = int_param(uri, "latency", 50)
    caps = uri.params.get("caps") or (f"application/x-rtp,media=video,clock-rate=90000,"
                                      f"encoding-name={codec.upper()},payload={payload}")
    multicast = address.split(".")[0].isdigit() and 224 <= int(address.split(".")[0]) <= 239
    src = f"udpsrc address={address} port={port} caps={quote(caps)}"
    if multicast:
        src += " auto-multicast=true"
    return (f"{src} ! rtpjitterbuffer latency={latency} ! {DEPAYLOADERS[codec]} ! "
            f"{decode_chain(codec, registry)} ! {APPSINK}")


def gst_pipeline(uri: SourceURI) -> str:
    """gst://DESCRIPTION: the expert's own pipeline; it must contain an appsink (named `sink` or the only one)."""
    description = uri.raw.split("://", 1)[1].strip()
    if "appsink" not in description:
        raise SourceError(f"{uri.raw}: a gst:// pipeline must end in an appsink",
                          "e.g. gst://videotestsrc ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink")
    return description

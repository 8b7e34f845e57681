"""Pipeline strings for every URI kind and decoder/encoder choice, against fake element registries, so the
Jetson and VA-API paths are covered without that hardware."""

from __future__ import annotations

import pytest

from firespotter.plugins.sources import gst_uris
from firespotter.runtime.errors import SourceError
from firespotter.runtime.gst import FakeRegistry, choose_decoder, choose_encoder, decode_chain, encode_chain
from firespotter.runtime.sources import parse_uri

JETSON = FakeRegistry(frozenset({"nvv4l2decoder", "nvvidconv", "nvv4l2h264enc", "avdec_h264", "x264enc",
                                 "nvarguscamerasrc"}))
INTEL = FakeRegistry(frozenset({"vah264dec", "vah265dec", "vah264enc", "avdec_h264", "x264enc"}))
CPU = FakeRegistry(frozenset({"avdec_h264", "avdec_h265", "x264enc", "openh264enc", "openh264dec"}))
OPENH264_ONLY = FakeRegistry(frozenset({"openh264dec", "openh264enc"}))
BARE = FakeRegistry(frozenset())


@pytest.mark.parametrize("registry, codec, expected", [
    (JETSON, "h264", "nvv4l2decoder"), (JETSON, "h265", "nvv4l2decoder"),
    (INTEL, "h264", "vah264dec"), (INTEL, "h265", "vah265dec"),
    (CPU, "h264", "avdec_h264"), (CPU, "h265", "avdec_h265"),
    (OPENH264_ONLY, "h264", "openh264dec"), (OPENH264_ONLY, "h265", None), (BARE, "h264", None),
])
def test_decoder_choice(registry, codec, expected):
    choice = choose_decoder(codec, registry)
    assert (choice[0] if choice else None) == expected


def test_decode_chains():
    assert decode_chain("h264", JETSON) == "h264parse ! nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx"
    assert decode_chain("h265", INTEL) == "h265parse ! vah265dec"
    assert decode_chain("h264", CPU) == "h264parse ! avdec_h264 max-threads=2"
    assert decode_chain("h265", OPENH264_ONLY) == "decodebin"  # nothing explicit: let decodebin try


def test_encoder_choice():
    assert choose_encoder(JETSON)[0] == "nvv4l2h264enc"
    assert "nvvidconv ! video/x-raw(memory:NVMM),format=NV12 ! nvv4l2h264enc" in encode_chain(JETSON, kbps=4000)
    assert "bitrate=4000000" in encode_chain(JETSON, kbps=4000)
    assert choose_encoder(INTEL)[0] == "vah264enc"
    assert "x264enc tune=zerolatency" in encode_chain(CPU, kbps=1500) and "bitrate=1500" in encode_chain(CPU, 1500)
    assert choose_encoder(OPENH264_ONLY)[0] == "openh264enc"
    with pytest.raises(RuntimeError, match="no H.264 encoder"):
        encode_chain(BARE)


def test_file_pipelines():
    p = gst_uris.file_pipeline('/data/my "flight".mp4', "h264", JETSON)
    assert p.startswith('filesrc location="/data/my \\"flight\\".mp4" ! parsebin ! h264parse ! nvv4l2decoder')
    assert "appsink name=sink sync=false" in p.rsplit("!", 1)[1]
    assert "decodebin" in gst_uris.file_pipeline("/x.avi", "other", CPU)


def test_v4l2_and_csi_pipelines():
    p = gst_uris.v4l2_pipeline(parse_uri("v4l2:///dev/video2?width=640&height=480&fps=30"))
    assert p.startswith('v4l2src device="/dev/video2" ! video/x-raw,width=640,height=480,framerate=30/1 ! ')
    p = gst_uris.v4l2_pipeline(parse_uri("v4l2:///dev/video0?format=mjpeg&width=1280&height=720"))
    assert "image/jpeg,width=1280,height=720 ! jpegdec" in p
    p = gst_uris.csi_pipeline(parse_uri("csi://1?width=1920&height=1080&fps=30"))
    assert p.startswith("nvarguscamerasrc sensor-id=1 ! "
                        "video/x-raw(memory:NVMM),width=1920,height=1080,framerate=30/1 ! nvvidconv ! ")
    with pytest.raises(SourceError, match="sensor number"):
        gst_uris.csi_pipeline(parse_uri("csi://front"))


def test_rtsp_pipeline_options():
    p = gst_uris.rtsp_pipeline(parse_uri("rtsp://10.0.0.5:8554/cam?latency=100&transport=udp&token=abc"), JETSON)
    assert p.startswith('rtspsrc location="rtsp://10.0.0.5:8554/cam?token=abc" latency=100 protocols=udp ')
    assert "rtph264depay ! h264parse ! nvv4l2decoder" in p
    p = gst_uris.rtsp_pipeline(parse_uri("rtsp://cam/x?codec=h265"), CPU)
    assert "protocols=tcp" in p and "rtph265depay ! h265parse ! avdec_h265" in p
    with pytest.raises(SourceError, match="transport"):
        gst_uris.rtsp_pipeline(parse_uri("rtsp://cam/x?transport=carrier-pigeon"), CPU)
    with pytest.raises(SourceError, match="codec"):
        gst_uris.rtsp_pipeline(parse_uri("rtsp://cam/x?codec=mpeg2"), CPU)


def test_rtp_pipelines():
    p = gst_uris.rtp_pipeline(parse_uri("rtp://@:5600"), CPU)
    assert p.startswith('udpsrc address=0.0.0.0 port=5600 caps="application/x-rtp,media=video,clock-rate=90000,'
                        'encoding-name=H264,payload=96" ! rtpjitterbuffer latency=50 ! rtph264depay ! h264parse')
    p = gst_uris.rtp_pipeline(parse_uri("rtp://239.1.2.3:5000?codec=h265&latency=20"), INTEL)
    assert "address=239.1.2.3 port=5000" in p and "auto-multicast=true" in p and "vah265dec" in p
    assert gst_uris.rtp_endpoint(parse_uri("rtp://127.0.0.1:6000")) == ("127.0.0.1", 6000)
    for bad in ("rtp://@", "rtp://@:99999"):
        with pytest.raises(SourceError):
            gst_uris.rtp_pipeline(parse_uri(bad), CPU)


def test_gst_pipeline_needs_appsink():
    uri = parse_uri("gst://videotestsrc num-buffers=3 ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink")
    assert gst_uris.gst_pipeline(uri).startswith("videotestsrc num-buffers=3")
    with pytest.raises(SourceError, match="must end in an appsink"):
        gst_uris.gst_pipeline(parse_uri("gst://videotestsrc ! fakesink"))

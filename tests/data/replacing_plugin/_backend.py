"""A PEP 517 build backend of a dozen lines for this test package: the wheel holds
speaker_calls.py and its metadata with the ``audiopolicyd.plugins`` entry point."""

import base64
import hashlib
import zipfile
from pathlib import Path

NAME, VERSION = "audiopolicyd_test_speaker_calls", "1.0"
DIST_INFO = f"{NAME}-{VERSION}.dist-info"
FILES = {
    "speaker_calls.py": (Path(__file__).parent / "speaker_calls.py").read_bytes(),
    f"{DIST_INFO}/METADATA": b"Metadata-Version: 2.1\nName: audiopolicyd-test-speaker-calls\n"
                             b"Version: 1.0\nSummary: Test plugin: every call to the speaker\n",
    f"{DIST_INFO}/WHEEL": b"Wheel-Version: 1.0\nGenerator: _backend\nRoot-Is-Purelib: true\n"
                          b"Tag: py3-none-any\n",
    f"{DIST_INFO}/entry_points.txt": b"[audiopolicyd.plugins]\nspeaker_calls = speaker_calls\n",
}


def _record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}\n"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    wheel = f"{NAME}-{VERSION}-py3-none-any.whl"
    record = "".join(_record_line(p, d) for p, d in FILES.items()) + f"{DIST_INFO}/RECORD,,\n"
    with zipfile.ZipFile(Path(wheel_directory) / wheel, "w") as out:
        for path, data in FILES.items():
            out.writestr(path, data)
        out.writestr(f"{DIST_INFO}/RECORD", record)
    return wheel

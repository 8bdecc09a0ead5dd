"""A real Orthanc PACS for the tests (Debian's ``orthanc`` + ``orthanc-dicomweb``): started on
127.0.0.1 with a temporary configuration and storage, free HTTP and DICOM ports, HTTP Basic
auth, and the DICOMweb plugin; stopped (and its folder left to tmp_path) at the end.

The configuration written is the worked example of docs/pacs.md."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from tests.web.live_server import free_port

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USERNAME, PASSWORD = "spineseg", "orthanc-test-password"
AE_TITLE = "ORTHANC"
START_TIMEOUT_S = 30


def orthanc_available() -> str | None:
    """``None`` when Orthanc and its DICOMweb plugin are installed, else why not."""
    if not Path(ORTHANC).is_file():
        return "Orthanc is not installed (apt-get install orthanc orthanc-dicomweb; .ci/run does)"
    if not DICOMWEB_PLUGIN.is_file():
        return f"the DICOMweb plugin {DICOMWEB_PLUGIN} is missing (apt-get install orthanc-dicomweb)"
    return None


def orthanc_configuration(folder: Path, http_port: int, dicom_port: int,
                          modalities: dict[str, list[object]] | None = None) -> dict[str, object]:
    return {
        "Name": "spineseg-test-pacs",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": AE_TITLE,
        "RemoteAccessAllowed": False,  # 127.0.0.1 only
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USERNAME: PASSWORD},
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,  # accept C-STORE from any AE (the listener's SEGs)
        "DicomModalities": modalities or {},
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
        "StableAge": 1,
        "HttpTimeout": 30,
    }


class Orthanc:
    def __init__(self, folder: Path, modalities: dict[str, list[object]] | None = None) -> None:
        self.folder = folder
        self.http_port, self.dicom_port = free_port(), free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.config_path = folder / "orthanc.json"
        self.config_path.write_text(json.dumps(orthanc_configuration(folder, self.http_port, self.dicom_port,
                                                                     modalities), indent=2))
        self.log_path = folder / "orthanc.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=(USERNAME, PASSWORD), timeout=30)

    def start(self) -> Orthanc:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([ORTHANC, str(self.config_path)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            try:
                with self.client() as client:
                    if client.get("/system").status_code == 200:
                        return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer in {START_TIMEOUT_S} s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def upload_folder(self, folder: Path) -> list[str]:
        """POST every file of ``folder`` to /instances (Orthanc's REST upload); the instance ids."""
        ids = []
        with self.client() as client:
            for path in sorted(p for p in folder.iterdir() if p.is_file()):
                answer = client.post("/instances", content=path.read_bytes())
                answer.raise_for_status()
                ids.append(answer.json()["ID"])
        return ids

    def count(self) -> dict[str, int]:
        with self.client() as client:
            return {k: int(v) for k, v in client.get("/statistics").json().items() if k.startswith("Count")}

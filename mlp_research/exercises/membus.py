"""The memory bus: read from what the machine reports where it can be, otherwise implied by a measured bandwidth.

The firmware's SMBIOS tables describe each memory device (type 17): its data
width in bits and its speed in MT/s. Linux exposes them as
/sys/firmware/dmi/entries/17-*/raw (root only), and `dmidecode -t memory` reads
the same tables. A virtual machine often exposes none: then the bus width is
derived from bandwidth = width x transfer rate, with the transfer rate an
assumption the report states, which makes a measured bandwidth a lower bound on
the width.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import struct
import subprocess

# Transfer rates (MT/s) assumed when the machine does not report its memory.
ASSUMED_RATES = {"cpu": {"DDR4-3200": 3200, "DDR5-4800": 4800, "DDR5-5600": 5600},
                 "gpu": {"HBM2e 3.2 Gb/s/pin": 3200, "HBM3 5.2 Gb/s/pin": 5200, "GDDR6 16 Gb/s/pin": 16000}}
DMI_ENTRIES = "/sys/firmware/dmi/entries"


def parse_type17(raw: bytes) -> dict | None:
    """One SMBIOS memory device (type 17) record: data width (bits), speed (MT/s), size; None for an empty slot."""
    if len(raw) < 0x17 or raw[0] != 17:
        return None
    total_width, data_width, size = struct.unpack_from("<HHH", raw, 0x08)
    speed = struct.unpack_from("<H", raw, 0x15)[0]
    configured = struct.unpack_from("<H", raw, 0x20)[0] if len(raw) >= 0x22 else 0
    if size in (0, 0xFFFF) or data_width in (0, 0xFFFF):
        return None
    return {"data_width_bits": data_width, "total_width_bits": total_width,
            "speed_mts": configured or speed or None}


def parse_dmidecode(text: str) -> list[dict]:
    """The populated devices of `dmidecode -t memory` output (blocks without a size are empty slots)."""
    devices = []
    for block in text.split("Memory Device")[1:]:
        fields = dict(re.findall(r"^\s*([A-Za-z ]+):\s*(.+?)\s*$", block, re.M))
        width = re.match(r"(\d+) bits", fields.get("Data Width", ""))
        if not width or fields.get("Size", "No Module Installed").startswith(("No Module", "Unknown")):
            continue
        speed = re.match(r"(\d+) MT/s", fields.get("Configured Memory Speed", "") or fields.get("Speed", ""))
        devices.append({"data_width_bits": int(width.group(1)), "speed_mts": int(speed.group(1)) if speed else None})
    return devices


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_devices() -> tuple[list[dict], str]:
    """(populated memory devices, where they came from or why none could be read)."""
    tried = []
    raws = sorted(glob.glob(os.path.join(DMI_ENTRIES, "17-*", "raw")))
    if raws:
        try:
            devices = [d for d in (parse_type17(_read_bytes(p)) for p in raws) if d]
            if devices:
                return devices, f"SMBIOS type 17 in {DMI_ENTRIES}"
            tried.append(f"{DMI_ENTRIES} lists no populated memory device")
        except OSError as e:
            tried.append(f"{DMI_ENTRIES} unreadable ({e.strerror})")
    else:
        tried.append(f"{DMI_ENTRIES} absent")
    if shutil.which("dmidecode"):
        done = subprocess.run(["dmidecode", "-t", "memory"], capture_output=True, text=True, timeout=30)
        devices = parse_dmidecode(done.stdout)
        if devices:
            return devices, "dmidecode -t memory"
        reason = (done.stderr.strip().splitlines() or ["no memory device"])[-1]
        tried.append(f"dmidecode found none ({reason})")
    else:
        tried.append("dmidecode not installed")
    return [], "; ".join(tried)


def reported_bus(devices: list[dict]) -> dict | None:
    """Bus width and peak bandwidth from reported devices, assuming one device per channel (stated)."""
    if not devices:
        return None
    bits = sum(d["data_width_bits"] for d in devices)
    speeds = [d["speed_mts"] for d in devices if d.get("speed_mts")]
    peak = sum(d["data_width_bits"] / 8 * d["speed_mts"] * 1e6 for d in devices if d.get("speed_mts")) / 1e9
    return {"devices": len(devices), "bits": bits, "speed_mts": min(speeds) if speeds else None,
            "peak_gb_per_s": peak if speeds else None}


def implied_bus_widths(gb_per_s: float, platform_name: str) -> list[dict]:
    """The narrowest bus (bits) that delivers `gb_per_s` at each assumed transfer rate (bandwidth = width x rate)."""
    out = []
    for name, mts in ASSUMED_RATES["gpu" if platform_name == "gpu" else "cpu"].items():
        bits = gb_per_s * 1e9 * 8 / (mts * 1e6)
        out.append({"memory": name, "mt_per_s": mts, "bits": bits, "channels_64bit": bits / 64})
    return out


def last_level_cache_bytes() -> int | None:
    """The largest cache the CPU reports (a virtual machine may report its host's); None where it reports none."""
    sizes = []
    for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        match = re.match(r"(\d+)([KMG]?)", _read_bytes(path).decode().strip())
        if match:
            sizes.append(int(match.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[match.group(2)])
    return max(sizes, default=None)

"""First-start content: deterministic images per tenant, and optional task history.

Image bytes are dynamic VHDs of seeded pseudo-random data (``vhd.py``), the same for
the same ``seed`` on every machine, and an exported image can be imported again.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass

from imgtools.emulator.config import EmulatorConfig
from imgtools.emulator.state import EmulatorState
from imgtools.emulator.store import ImageRow, TaskRow
from imgtools.emulator.vhd import FOOTER_SIZE, VHD_EPOCH, seeded_fill, vhd_pieces

__all__ = ["BASE_IMAGES_OWNER", "IMAGE_SPECS", "image_id_for", "seed_images", "seed_tasks",
           "seeded_image_bytes"]

NAMESPACE = uuid.UUID("6f1c2c64-8c1e-4a43-9b7e-4f1d0e6a5b10")
#: The tenant owning Rackspace's public base images (from the API docs' example).
BASE_IMAGES_OWNER = "657197"
#: 2024-01-01T00:00:00Z: seeded images have fixed, reproducible timestamps.
EPOCH = 1704067200.0
#: The smallest seeded image: a fixed VHD of one sector.
MIN_IMAGE_SIZE = 2 * FOOTER_SIZE


@dataclass(frozen=True, slots=True)
class ImageSpec:
    slug: str
    name: str
    factor: float  # size relative to config.image_size
    status: str = "active"
    options: str = "0"
    os_type: str = "linux"
    distro: str = "ubuntu"
    tags: tuple[str, ...] = ()


#: Each tenant's own images: exportable ones and ones that cannot be exported.
IMAGE_SPECS: tuple[ImageSpec, ...] = (
    ImageSpec("web", "web01 snapshot (Ubuntu 22.04)", 1.0, tags=("web", "prod")),
    ImageSpec("db", "db01 snapshot (CentOS 7)", 0.5, distro="centos", tags=("db",)),
    ImageSpec("small", "build-agent snapshot (Debian 12)", 0.25, distro="debian"),
    ImageSpec("windows", "app01 snapshot (Windows Server 2019)", 0.5, options="2",
              os_type="windows", distro="windows"),
    ImageSpec("rhel", "erp snapshot (Red Hat Enterprise Linux 8)", 0.25, options="4",
              distro="rhel"),
    ImageSpec("old", "legacy snapshot (Ubuntu 18.04, deactivated)", 0.25,
              status="deactivated", tags=("legacy",)),
)
#: Public base images owned by Rackspace: visible to everyone, exportable by no one.
BASE_SPECS: tuple[ImageSpec, ...] = (
    ImageSpec("base-ubuntu", "Ubuntu 22.04 LTS (Jammy Jellyfish) (PVHVM)", 0.5),
    ImageSpec("base-windows", "Windows Server 2019 Standard (PVHVM)", 0.25, options="2",
              os_type="windows", distro="windows"),
)


def image_id_for(tenant: str, slug: str, seed: int = 0, region: str = "") -> str:
    """The id of a seeded image, e.g. ``image_id_for("100001", "web")``; ``region`` is ""
    for the default region (the ids of a single-region emulator) or another region's name."""
    where = f"{region}:" if region else ""
    return str(uuid.uuid5(NAMESPACE, f"{seed}:{where}{tenant}:{slug}"))


def _id_region(state: EmulatorState, region: str) -> str:
    return "" if region == state.default_region else region


def _write_image(state: EmulatorState, region: str, owner: str, spec: ImageSpec, index: int,
                 visibility: str) -> None:
    config = state.config
    store = state.store_in(region)
    image_id = image_id_for(owner, spec.slug, config.seed, _id_region(state, region))
    if store.get_image(image_id) is not None:
        return
    # Each region's images differ: their ids, bytes, sizes, dates and names.
    position = state.config.regions.index(region)
    factor = spec.factor * (1.0 - 0.125 * (position % 4)) if position else spec.factor
    size = max(MIN_IMAGE_SIZE, int(config.image_size * factor))
    pieces = vhd_pieces(size, uuid.UUID(image_id), seeded_fill(f"{config.seed}:{image_id}"),
                        int(EPOCH - VHD_EPOCH + index * 86400))
    path = store.image_path(image_id)
    tmp = path.with_suffix(".part")
    md5 = hashlib.md5()
    with open(tmp, "wb") as handle:
        for piece in pieces:
            md5.update(piece)
            handle.write(piece)
    tmp.replace(path)
    created = EPOCH + index * 86400.0 + position * 3600.0
    name = spec.name if not position else f"{spec.name} [{region}]"
    props = {
        "disk_format": "vhd", "container_format": "ovf",
        "image_type": "base" if visibility == "public" else "snapshot",
        "os_type": spec.os_type, "os_distro": spec.distro, "vm_mode": "hvm",
        "auto_disk_config": "disabled", "cache_in_nova": "True", "flavor_classes": "*,!onmetal",
        "com.rackspace__1__options": spec.options, "com.rackspace__1__source": "kickstart",
        "com.rackspace__1__build_core": "1", "com.rackspace__1__visible_core": "0",
        "com.rackspace__1__platform_target": "PublicCloud",
        "org.openstack__1__os_distro": f"org.{spec.distro}",
        "org.openstack__1__architecture": "x64",
    }
    store.put_image(ImageRow(
        image_id, owner, name, spec.status, visibility, size,
        md5.hexdigest(), created, created + 3600.0, props, list(spec.tags),
        image_id))


def seeded_image_bytes(config: EmulatorConfig) -> int:
    """About how many image bytes a first start writes (every seeded region at full size):
    what its start-up time grows with when ``image_size`` is large."""
    regions = len(config.regions) if config.seed_all_regions else 1
    factors = (sum(s.factor for s in BASE_SPECS)
               + len({u.tenant_id for u in config.users}) * sum(s.factor for s in IMAGE_SPECS))
    return int(regions * factors * config.image_size)


def seed_images(state: EmulatorState, region: str | None = None) -> None:
    """Give every configured tenant its images in ``region`` (the default one when ``None``),
    and create the region's public base images (idempotent)."""
    region = region or state.default_region
    for index, spec in enumerate(BASE_SPECS):
        _write_image(state, region, BASE_IMAGES_OWNER, spec, index, "public")
    for user in state.config.users:
        for index, spec in enumerate(IMAGE_SPECS):
            _write_image(state, region, user.tenant_id, spec, index + 10, "private")


_FAILURES = (
    "Container not found. Container: {container}",
    "Object already exists in user's container. Container/Object: {container}/{image}.vhd",
    "An image may only be exported by the image owner.",
    "Image cannot be exported due to licensing or billing restrictions "
    "(com.rackspace__1__options: '2')",
    "Requested image for export was not found: {image}",
    "Unknown error occurred during image export",
)
_IMPORT_FAILURES = (
    "Image not found for import. Possible invalid location",
    "Image cannot be imported. Error code: '396'",
    "Unsupported element in image_properties, please consult the documentation.",
)
_CONTAINERS = ("exports", "backups", "nightly", "dr-copies")


def seed_tasks(state: EmulatorState, count: int, tenant: str | None = None,
               region: str | None = None) -> int:
    """Insert ``count`` finished tasks of mixed types, outcomes and ages into ``tenant`` (every
    configured tenant when ``None``) in ``region`` (the default one when ``None``), once per
    data dir. Each tenant and region gets its own history. Returns how many were inserted."""
    if count <= 0:
        return 0
    region = region or state.default_region
    if tenant is None:
        tenants = dict.fromkeys(u.tenant_id for u in state.config.users)
        return sum(seed_tasks(state, count, t, region) for t in tenants)
    store = state.store_in(region)
    key = f"seeded_tasks:{tenant}"
    if store.get_meta(key) is not None:
        return 0
    config = state.config
    id_region = _id_region(state, region)
    # The default region keeps the history a single-region emulator seeded.
    rng = random.Random(f"{config.seed}:tasks:{id_region + ':' if id_region else ''}{tenant}")
    now = state.clock.now()
    images = [image_id_for(tenant, spec.slug, config.seed, id_region) for spec in IMAGE_SPECS]
    # Ages stay inside the TTL, or the purge would remove them at once.
    span = max(60.0, config.task_ttl * 0.9)
    rows: list[TaskRow] = []
    for _ in range(count):
        roll = rng.random()
        image = rng.choice(images)
        container = rng.choice(_CONTAINERS)
        finished = now - rng.uniform(1.0, span)
        duration = rng.uniform(20.0, 2400.0)
        created = finished - duration
        task_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if roll < 0.85:
            task_type = "export"
            task_input: dict[str, object] = {"image_uuid": image,
                                             "receiving_swift_container": container}
        else:
            task_type = "import"
            task_input = {"import_from": f"{container}/{image}.vhd",
                          "import_from_format": "vhd",
                          "image_properties": {"name": f"restored-{image[:8]}"}}
        failed = rng.random() < 0.15
        if failed:
            pool = _FAILURES if task_type == "export" else _IMPORT_FAILURES
            message = rng.choice(pool).format(container=container, image=image)
            result = None
        else:
            message = ""
            result = ({"export_location": f"{container}/{image}.vhd"} if task_type == "export"
                      else {"image_id": str(uuid.UUID(int=rng.getrandbits(128), version=4))})
        rows.append(TaskRow(task_id, tenant, task_type, "failure" if failed else "success",
                            task_input, result, message, created, finished,
                            finished + config.task_ttl))
    # In time order the (owner, created_at) index grows at its end: far fewer page splits.
    rows.sort(key=lambda row: row.created_at)
    inserted = 0
    for start in range(0, len(rows), 20000):
        store.insert_tasks(rows[start:start + 20000])
        inserted += len(rows[start:start + 20000])
    store.set_meta(key, str(inserted))
    state.stats.event("tasks_seeded", inserted)
    return inserted

"""Regions: where a login's endpoints are in each region, ServiceNet, and what a bare token
tells about itself.

One identity login serves every region: the service catalog lists, per region, a Cloud Images
``publicURL`` and a Cloud Files ``publicURL`` and ``internalURL`` (ServiceNet: no bandwidth
charge between servers and Cloud Files of the same region). A client is in one region; its
``in_region`` twin uses the same login (see ``Client.in_region``).

A bare token (``endpoint`` + ``token``) comes with no catalog, so the client derives what it
can and says what it cannot:

- the tenant, from a Cloud Files storage URL ending in ``MossoCloudFS_<digits>`` (the numeric
  tenant that owns images); a ``MossoCloudFS_<uuid>`` storage URL does not name it: set
  ``tenant_id``;
- the region only when given (``region=`` or ``RAX_REGION``): the endpoint alone does not say;
- no other region and no ServiceNet URL: those need a login (``MissingSetting``).

No I/O here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imgtools._auth import Credentials, Session, normalise_image_endpoint, normalise_url
from imgtools._exceptions import ConfigurationError, MissingSetting, UnknownRegion

__all__ = [
    "SERVICENET_ENV",
    "Catalog",
    "RegionEndpoints",
    "catalog_regions",
    "region_session",
    "servicenet_wanted",
    "settle",
    "tenant_from_storage_url",
]

#: ``RAX_SERVICENET=1`` uses the Cloud Files ``internalURL`` (as pyrax and swiftly read it).
SERVICENET_ENV = "RAX_SERVICENET"
_TRUE = ("1", "true", "yes", "on")
_MOSSO = re.compile(r"/MossoCloudFS_(\d+)$")

_NEEDS_LOGIN = ("log in with username + API key (RAX_USERNAME and RAX_API_KEY) so that the "
                "service catalog gives every region's endpoints")


@dataclass(frozen=True, slots=True)
class RegionEndpoints:
    """One region's endpoints from the catalog (``None`` where the catalog has none)."""

    region: str
    image: str | None
    files: str | None
    files_internal: str | None


@dataclass(frozen=True, slots=True)
class Catalog:
    """The regions of a service catalog, in the catalog's order."""

    endpoints: tuple[RegionEndpoints, ...]

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(e.region for e in self.endpoints)

    @classmethod
    def parse(cls, raw: Sequence[Any]) -> Catalog:
        """Read identity's ``serviceCatalog`` (Rackspace's names preferred, any service of
        the right type accepted, as at login)."""
        found: dict[str, dict[str, str | None]] = {}
        order: list[str] = []
        for kind, type_, name in (("image", "image", "cloudImages"),
                                  ("files", "object-store", "cloudFiles")):
            services = [s for s in raw if isinstance(s, Mapping) and s.get("type") == type_]
            services.sort(key=lambda s: s.get("name") != name)
            for service in services[:1]:
                for e in service.get("endpoints") or []:
                    if not isinstance(e, Mapping) or not e.get("region"):
                        continue
                    region = str(e["region"])
                    key = region.upper()
                    if key not in found:
                        found[key] = {"region": region, "image": None, "files": None,
                                      "files_internal": None}
                        order.append(key)
                    url = e.get("publicURL") or e.get("url")
                    if isinstance(url, str) and found[key][kind] is None:
                        found[key][kind] = url
                    internal = e.get("internalURL")
                    if kind == "files" and isinstance(internal, str):
                        found[key]["files_internal"] = internal
        return cls(tuple(RegionEndpoints(str(found[k]["region"]), found[k]["image"],
                                         found[k]["files"], found[k]["files_internal"])
                         for k in order))

    def find(self, region: str) -> RegionEndpoints:
        """A region's endpoints (any letter case); ``UnknownRegion`` naming the others."""
        for entry in self.endpoints:
            if entry.region.upper() == region.strip().upper():
                return entry
        offered = self.regions
        raise UnknownRegion(f"the service catalog has no region {region!r}: it offers "
                            f"{', '.join(offered) or 'none'}", region=region, regions=offered)

    def region_of(self, image_endpoint: str | None) -> str | None:
        """The region whose Cloud Images endpoint is ``image_endpoint``."""
        for entry in self.endpoints:
            if entry.image and image_endpoint and \
                    normalise_image_endpoint(entry.image) == image_endpoint:
                return entry.region
        return None


def servicenet_wanted(servicenet: bool | None, environ: Mapping[str, str]) -> bool:
    """``servicenet`` if given, else whether ``RAX_SERVICENET`` says yes."""
    if servicenet is not None:
        return bool(servicenet)
    return environ.get(SERVICENET_ENV, "").strip().lower() in _TRUE


def tenant_from_storage_url(url: str | None) -> str | None:
    """The numeric tenant a ``.../MossoCloudFS_<digits>`` storage URL names, else ``None``."""
    if not url:
        return None
    match = _MOSSO.search(url.rstrip("/"))
    return match.group(1) if match else None


def _files_url(entry: RegionEndpoints, servicenet: bool) -> str | None:
    if not servicenet:
        return None if entry.files is None else normalise_url(entry.files,
                                                              name="catalog cloudFiles URL")
    if entry.files_internal is None:
        raise ConfigurationError(f"servicenet is on, but the service catalog gives no Cloud "
                                 f"Files internalURL in region {entry.region}")
    return normalise_url(entry.files_internal, name="catalog cloudFiles internalURL")


def settle(session: Session, creds: Credentials, *, servicenet: bool) -> Session:
    """The session of a client just logged in, completed: its region (as the catalog spells
    it), the ServiceNet storage URL when asked for, the tenant a bare token's storage URL
    names. An explicit ``files_endpoint`` (``FILES_ENDPOINT``) beats the catalog."""
    if not session.catalog:
        if servicenet and not creds.files_endpoint:
            raise MissingSetting(
                "servicenet is on, but a bare token has no service catalog to take the "
                "ServiceNet (internalURL) storage URL from: set FILES_ENDPOINT to it, or "
                + _NEEDS_LOGIN, setting="files_endpoint")
        region = creds.region.strip().upper() if creds.region else None
        tenant = session.tenant_id or tenant_from_storage_url(session.files_endpoint)
        return dataclasses.replace(session, region=region, tenant_id=tenant)
    catalog = Catalog.parse(session.catalog)
    region = session.region
    entry = catalog.find(region) if region else None
    if entry is None:
        named = catalog.region_of(session.image_endpoint)
        entry = catalog.find(named) if named else None
    if entry is None:  # a catalog whose entries name no region: keep what login chose
        return session
    files = session.files_endpoint
    if servicenet and not creds.files_endpoint:
        files = _files_url(entry, servicenet=True)
    return dataclasses.replace(session, region=entry.region, files_endpoint=files)


def region_session(session: Session, region: str, *, servicenet: bool) -> Session:
    """The same login's session in another region (no request). ``UnknownRegion`` for a
    region the catalog does not offer; ``MissingSetting`` for a bare token."""
    if not session.catalog:
        raise MissingSetting(f"cannot switch to region {region!r}: a bare token has no "
                             "service catalog; " + _NEEDS_LOGIN + ", or connect with "
                             "that region's endpoint and token", setting="region")
    entry = Catalog.parse(session.catalog).find(region)
    if entry.image is None:
        raise UnknownRegion(f"the service catalog has no Cloud Images endpoint in region "
                            f"{entry.region}", region=region,
                            regions=Catalog.parse(session.catalog).regions)
    return dataclasses.replace(
        session, region=entry.region,
        image_endpoint=normalise_image_endpoint(entry.image, name="catalog cloudImages URL"),
        files_endpoint=_files_url(entry, servicenet))


def catalog_regions(session: Session | None) -> tuple[str, ...]:
    """Every region of the session's catalog (empty for a bare token)."""
    if session is None or not session.catalog:
        return ()
    return Catalog.parse(session.catalog).regions

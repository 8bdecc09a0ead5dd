"""The model registry: immutable versions on disk, a production pointer, and its history.

Layout under ``root``::

    versions/<id>/weights.safetensors
    versions/<id>/card.json
    versions/.tmp-*          staging folders; a crash can leave one behind, readers skip it
    state.json               production stack + history (see ``registry.state``)
    .lock                    flock'ed around every change

A version appears by one ``rename`` of a complete staging folder, so a crash never leaves a
half version. Every change (register, import, promote, rollback) holds the lock, so two
processes cannot interleave their read-modify-write of ``state.json``. A card that names its
``training_run_id`` is registered at most once: registering it again (a retried or duplicated
training run) returns the version that run already has.
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from spineseg.errors import InputError, IntegrityError, ModelNotFoundError
from spineseg.model.card import CARD_FILE, WEIGHTS_FILE, ModelCard, sha256_file
from spineseg.registry.archive import extract_model_archive, write_model_archive
from spineseg.registry.atomic import (
    InterProcessLock,
    copy_file_synced,
    fsync_dir,
    make_staging_dir,
    remove_leftover_temps,
)
from spineseg.registry.state import PROMOTE, ROLLBACK, RegistryEvent, RegistryState, read_state, write_state
from spineseg.registry.version import (
    VERSION_ID_PATTERN,
    RegisteredModel,
    check_safetensors,
    generate_version_id,
    package_version,
    read_version_folder,
    utc_now_iso,
    validate_version_id,
)

log = logging.getLogger(__name__)


class Registry:
    """Versioned models under ``root`` (normally ``Settings.registry_dir``).

    Read methods never take the lock: versions are immutable and ``state.json`` is replaced
    atomically. ``get`` and ``production`` return models whose weights were checked against
    the card's sha256 (re-hashed only when the file's size, mtime, ctime or inode changed).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.state_path = self.root / "state.json"
        self._file_lock = InterProcessLock(self.root / ".lock")
        self._lock: Any = self._file_lock
        self._verified: dict[str, tuple[object, ...]] = {}

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    @property
    def file_lock(self) -> InterProcessLock:
        """The ``flock`` on ``.lock`` (what ``mutation_lock`` holds unless ``use_lock`` was called)."""
        return self._file_lock

    def use_lock(self, lock: Any) -> None:
        """Hold ``lock`` (an object with a re-entrant ``held()`` context) around every change
        instead of the file lock alone: e.g. a database lock shared by several machines, whose
        network filesystem may not honour ``flock`` (``spineseg.store.locks``)."""
        self._lock = lock

    @contextmanager
    def mutation_lock(self) -> Iterator[None]:
        """Hold the registry's inter-process lock (re-entrant); use around check-then-act
        sequences built from several registry calls."""
        with self._lock.held():
            yield

    # ---- reading -------------------------------------------------------------------------

    def _state(self) -> RegistryState:
        return read_state(self.state_path)

    def _version_folders(self) -> list[Path]:
        if not self.versions_dir.is_dir():
            return []
        return [
            entry
            for entry in self.versions_dir.iterdir()
            if not entry.name.startswith(".") and entry.is_dir() and (entry / CARD_FILE).is_file()
        ]

    def version_ids(self) -> list[str]:
        """Ids of all stored versions, sorted by name (cheap: reads no card)."""
        return sorted(folder.name for folder in self._version_folders())

    def list_versions(self) -> list[RegisteredModel]:
        """All versions, oldest first (by ``card.created``, then id). Weights are not hashed
        here; a version whose card is unreadable is logged and left out."""
        production_id = self._state().production
        models = []
        for folder in self._version_folders():
            try:
                models.append(read_version_folder(folder, is_production=folder.name == production_id))
            except IntegrityError as exc:
                log.warning("skipping version %s: %s", folder.name, exc)
        return sorted(models, key=lambda m: (m.card.created or "", m.id))

    def version_of_training_run(self, run_id: str) -> RegisteredModel | None:
        """The version whose card records ``training_run_id == run_id`` (weights verified), or
        ``None``. Reads every card: registries hold tens of versions, not thousands."""
        for model in self.list_versions():
            if model.card.training_run_id == run_id:
                return self.get(model.id)
        return None

    def _unknown(self, version_id: str) -> ModelNotFoundError:
        known = self.version_ids()
        listing = ", ".join(known) if known else "none (the registry is empty)"
        return ModelNotFoundError(
            f"no model version {version_id!r} in {self.root}; known versions: {listing}"
        )

    def get(self, version_id: str) -> RegisteredModel:
        """The version ``version_id``, its weights verified; ``ModelNotFoundError`` listing the
        known ids when it does not exist, ``IntegrityError`` when its weights were altered."""
        model = self.unverified(version_id)
        self._verify_cached(model)
        return model

    def unverified(self, version_id: str) -> RegisteredModel:
        """The version ``version_id`` as its card describes it, its weights *not* checked: for
        showing a version and its recorded figures (one whose weights were damaged can still be
        shown, compared by its card and replaced), never for segmenting. ``ModelNotFoundError``
        when it does not exist, ``IntegrityError`` when its card cannot be read."""
        if not isinstance(version_id, str) or not VERSION_ID_PATTERN.fullmatch(version_id):
            raise self._unknown(str(version_id))
        folder = self.versions_dir / version_id
        if not (folder / CARD_FILE).is_file():
            raise self._unknown(version_id)
        return read_version_folder(folder, is_production=self._state().production == version_id)

    def _verify_cached(self, model: RegisteredModel) -> None:
        try:
            st = model.weights_path.stat()
        except FileNotFoundError as exc:
            raise IntegrityError(f"weights of version {model.id} are missing: {model.weights_path}") from exc
        signature = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, model.card.weights_sha256)
        if self._verified.get(model.id) == signature:
            return
        model.verify()
        self._verified[model.id] = signature

    def production_id(self) -> str | None:
        """Id of the production version without reading or verifying it (``None``: none)."""
        return self._state().production

    def production(self) -> RegisteredModel | None:
        """The production version (verified), or ``None`` when none was ever promoted."""
        production_id = self._state().production
        if production_id is None:
            return None
        try:
            return self.get(production_id)
        except ModelNotFoundError as exc:
            raise IntegrityError(
                f"the production pointer in {self.state_path} names version {production_id}, "
                "which is missing from the registry"
            ) from exc

    def rollback_target(self) -> str | None:
        """The version ``rollback`` would make production (the one before the current one);
        ``None`` when there is nothing to roll back to."""
        stack = self._state().production_stack
        return stack[-2] if len(stack) >= 2 else None

    def history(self) -> list[RegistryEvent]:
        """Promotions and rollbacks, oldest first, each with who and when."""
        return list(self._state().history)

    # ---- changing ------------------------------------------------------------------------

    def _prepare_versions_dir(self) -> None:
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        for leftover in remove_leftover_temps(self.versions_dir):
            log.info("removed %s left behind by an interrupted registry write", leftover.name)

    def _publish(self, staging: Path, version_id: str) -> None:
        """Rename a complete staging folder to its final name (the one atomic step)."""
        target = self.versions_dir / version_id
        if target.exists():
            raise InputError(version_id, "a version with this id already exists; versions are immutable")
        try:
            os.rename(staging, target)  # fails onto a complete (non-empty) version folder
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise InputError(version_id, "a version with this id already exists; versions are immutable") from exc
            raise
        fsync_dir(self.versions_dir)

    def register(
        self,
        weights_path: Path,
        card: ModelCard,
        *,
        make_production: bool = False,
        actor: str = "cli",
    ) -> RegisteredModel:
        """Store ``weights_path`` + ``card`` as a new immutable version and return it.

        The stored card gets ``created`` (now, UTC), ``weights_sha256`` (of the stored copy)
        and, when the caller left it empty, ``code_version`` (this package's version); the
        caller's ``parent_id`` and everything else are kept. ``card.id`` names the version
        (validated by ``VERSION_ID_PATTERN``); empty means generate ``v<date>-<time>-<hash8>``.
        The caller's ``card`` object is not modified. Raises ``InputError`` for unusable
        weights, a bad id or an id that exists; ``IntegrityError`` when the card already
        records a sha256 that the weights do not match. When ``card.training_run_id`` is set
        and a version of that run exists, nothing is written and that version is returned
        (checked under the lock, so racing processes register one version between them).
        """
        weights_path = Path(weights_path)
        check_safetensors(weights_path)
        if card.id:
            validate_version_id(card.id, "card.id")
        with self.mutation_lock():
            if card.training_run_id:
                existing = self.version_of_training_run(card.training_run_id)
                if existing is not None:
                    log.info("training run %s already registered version %s; not registering again",
                             card.training_run_id, existing.id)
                    return existing
            self._prepare_versions_dir()
            staging = make_staging_dir(self.versions_dir, "register")
            try:
                copy_file_synced(weights_path, staging / WEIGHTS_FILE)
                digest = sha256_file(staging / WEIGHTS_FILE)
                if card.weights_sha256 and card.weights_sha256 != digest:
                    raise IntegrityError(
                        f"weights file {weights_path} does not match the sha256 its card records "
                        f"({card.weights_sha256[:12]}..., file has {digest[:12]}...)"
                    )
                version_id = card.id or generate_version_id(digest)
                if (self.versions_dir / version_id).exists():
                    raise InputError(
                        version_id, "a version with this id already exists; versions are immutable"
                    )
                stored = copy.deepcopy(card)
                stored.id = version_id
                stored.created = utc_now_iso()
                stored.weights_sha256 = digest
                stored.code_version = card.code_version or package_version()
                _write_card(staging / CARD_FILE, stored)
                self._publish(staging, version_id)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            log.info("registered model version %s (parent %s)", version_id, stored.parent_id)
            if make_production:
                self._set_production(version_id, action=PROMOTE, actor=actor)
            return self.get(version_id)

    def import_file(
        self, in_file: Path, *, make_production: bool = False, actor: str = "cli"
    ) -> RegisteredModel:
        """Add the version held in an archive written by ``export``, card and hash unchanged.

        Refuses (``InputError``) anything but exactly ``card.json`` + ``weights.safetensors``,
        a card that does not parse, a bad id, or an id already present (never overwrites);
        ``IntegrityError`` when the weights do not match the card's sha256.
        """
        in_file = Path(in_file)
        with self.mutation_lock():
            self._prepare_versions_dir()
            staging = make_staging_dir(self.versions_dir, "import")
            try:
                card = extract_model_archive(in_file, staging)
                if (self.versions_dir / card.id).exists():
                    raise InputError(
                        in_file, f"version {card.id} already exists in the registry; import never overwrites"
                    )
                self._publish(staging, card.id)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            log.info("imported model version %s from %s", card.id, in_file)
            if make_production:
                self._set_production(card.id, action=PROMOTE, actor=actor)
            return self.get(card.id)

    def export(self, version_id: str, out_file: Path, *, overwrite: bool = False) -> Path:
        """Write version ``version_id`` (verified) to one .zip file holding ``card.json`` and
        ``weights.safetensors``; refuses to replace an existing file unless ``overwrite``."""
        model = self.get(version_id)
        return write_model_archive(model, Path(out_file), overwrite=overwrite)

    def promote(self, version_id: str, *, actor: str = "cli") -> RegisteredModel:
        """Make ``version_id`` (verified first) the production version and log who did it.
        Promoting the current production version changes nothing and logs nothing."""
        with self.mutation_lock():
            return self._set_production(version_id, action=PROMOTE, actor=actor)

    def rollback(self, *, actor: str = "cli") -> RegisteredModel:
        """Return production to the version that was production before the current one.

        Repeated rollbacks walk further back. ``InputError`` when there is no earlier
        production version; ``IntegrityError`` when that version's weights were altered.
        """
        with self.mutation_lock():
            state = self._state()
            if len(state.production_stack) < 2:
                current = state.production or "none"
                raise InputError(
                    "rollback",
                    f"nothing to roll back to: no earlier production version (production is {current})",
                )
            return self._set_production(state.production_stack[-2], action=ROLLBACK, actor=actor)

    def _set_production(self, version_id: str, *, action: str, actor: str) -> RegisteredModel:
        """Move the production pointer; caller holds the lock."""
        model = self.get(version_id)
        state = self._state()
        previous = state.production
        if action == PROMOTE:
            if previous == version_id:
                log.info("version %s is already production", version_id)
                return dataclasses.replace(model, is_production=True)
            state.production_stack.append(version_id)
        else:
            state.production_stack.pop()
        state.history.append(
            RegistryEvent(
                action=action, version_id=version_id, previous_id=previous, actor=actor, at=utc_now_iso()
            )
        )
        self.root.mkdir(parents=True, exist_ok=True)
        write_state(self.state_path, state)
        log.info("%s: production %s -> %s (by %s)", action, previous, version_id, actor)
        return dataclasses.replace(model, is_production=True)


def _write_card(path: Path, card: ModelCard) -> None:
    """Write a card into a staging folder and flush it (the folder rename publishes it)."""
    with path.open("w") as fh:
        fh.write(card.to_json())
        fh.flush()
        os.fsync(fh.fileno())

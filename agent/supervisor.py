"""InstanceSupervisor: the agent's instances, their VMM processes, their state.

Every operation takes the instance's lock, checks the pure rules
(`instance_state`), does the process/control-socket work, then records the
new state in the instance directory (so a restarted agent knows it without
etcd) and tells its listener (the etcd reporter). VMM exits arrive from the
ExitWatcher thread and go through the same path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import time
from collections.abc import Callable

from agent import instance_state as st
from agent import metrics as agent_metrics
from agent.drivers.base import Driver, DriverError
from agent.drivers.kvm import KvmDriver
from agent.image_cache import ImageCache, ImageFetchError
from agent.instance_state import State, check_action
from agent.jail import Jailer
from agent.vmm_process import InstancePaths
from agent.warm_parent import WarmParent
from computed import status
from computed.capacity import Capacity, Usage, shortfall
from computed.errors import Exhausted, NotFound
from computed.store.records import InstanceSpec
from computed.vmm.control_client import ControlError, QmpEvent

DEFAULT_STOP_TIMEOUT = 10.0
_KILL_WAIT = 5.0


class HostFull(Exhausted):
    """RESOURCE_EXHAUSTED: the instance does not fit on this host."""


@dataclasses.dataclass(frozen=True)
class InstanceView:
    """A snapshot of one instance, safe to hand to other threads."""

    spec: InstanceSpec
    state: State
    pid: int | None
    created_at: float
    updated_at: float
    placed: bool = False  # a scheduler placed it (SpawnRequest.placed)


class _Instance:
    def __init__(self, spec: InstanceSpec, paths: InstancePaths, state: State, created_at: float):
        self.spec = spec
        self.paths = paths
        self.state = state
        self.pid: int | None = None
        self.child: object | None = None  # the driver's handle (a VmmChild for KVM)
        self.expected_exit = False
        self.exited = threading.Event()
        self.created_at = created_at
        self.updated_at = time.time()
        self.placed = False
        # `lock` serialises operations (stop, start, …) and is held while they
        # wait for a VMM to exit; `state_lock` only guards state/pid updates, so
        # the exit watcher can record an exit while an operation waits for it.
        self.lock = threading.RLock()
        self.state_lock = threading.Lock()

    def view(self) -> InstanceView:
        return InstanceView(
            self.spec, self.state, self.pid, self.created_at, self.updated_at, self.placed
        )


class InstanceSupervisor:
    def __init__(
        self,
        state_dir: str,
        capacity: Capacity,
        on_change: Callable[[InstanceView], None] = lambda view: None,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        bridge: str | None = None,
        jailer: Jailer | None = None,
        warm: WarmParent | None = None,
        images: ImageCache | None = None,
        driver: Driver | None = None,
    ) -> None:
        """`driver` runs the instances (agent/drivers/); None: the KVM driver, built from
        `bridge`, `jailer` (confine every VMM; None: unconfined, development) and `warm`
        (fork VMMs from the warm parent; None execs). `images`: where uploaded images
        (spec.image_digest) come from; None refuses them."""
        self.state_dir = state_dir
        self.images = images
        self.driver: Driver = driver or KvmDriver(bridge, jailer, warm)
        self.capacity = capacity
        self.on_change = on_change
        self.stop_timeout = stop_timeout
        os.makedirs(os.path.join(state_dir, "instances"), mode=0o750, exist_ok=True)
        self._instances: dict[str, _Instance] = {}
        self._table_lock = threading.Lock()
        self.driver.bind(self._on_exit, self._on_qmp_event, self._runs)

    # --- start-up -------------------------------------------------------------
    def adopt_all(self) -> list[InstanceView]:
        """Rebuild the table from the instance directories; adopt live VMMs as they are."""
        root = os.path.join(self.state_dir, "instances")
        for uuid in sorted(os.listdir(root)):
            paths = InstancePaths.of(self.state_dir, uuid)
            try:
                spec, state, created_at = _load(paths)
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not an instance directory we wrote
            inst = _Instance(spec, paths, state, created_at)
            with self._table_lock:
                self._instances[uuid] = inst
            pid = self.driver.read_pid(paths)
            if pid is not None and self.driver.is_ours(pid, uuid):
                inst.pid = pid
                if self.driver.watch(uuid, pid, paths):
                    self._refresh_power_state(inst)
                    continue
            if inst.state.status in (status.ACTIVE, status.PAUSED, status.BUILD):
                record = self.driver.exit_record(paths)
                code, reason = record if record else (None, "")
                self._set_state(inst, st.state_after_exit(code, reason, expected=False))
        return self.list()

    # --- queries --------------------------------------------------------------
    def get(self, uuid: str) -> InstanceView:
        return self._find(uuid).view()

    def list(self) -> list[InstanceView]:
        with self._table_lock:
            instances = list(self._instances.values())
        return [i.view() for i in instances]

    def usage(self) -> Usage:
        return Usage.of(view.spec for view in self.list())

    def console_tail(self, uuid: str, lines: int) -> str:
        inst = self._find(uuid)
        chunks = []
        for path in (inst.paths.console + ".0", inst.paths.console):
            try:
                with open(path, "rb") as f:
                    f.seek(max(0, os.fstat(f.fileno()).st_size - 256 * 1024))
                    chunks.append(f.read())
            except FileNotFoundError:
                continue
        text = b"".join(chunks).decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:]) + ("\n" if text else "") if lines else text

    # --- lifecycle ------------------------------------------------------------
    def spawn(self, spec: InstanceSpec, placed: bool = False) -> InstanceView:
        """Create and start an instance; idempotent by uuid. `placed`: a scheduler placed
        it (its record is in etcd), which the reports' rules need to know from the start."""
        with self._table_lock:
            existing = self._instances.get(spec.uuid)
            if existing is None:
                problem = shortfall(self.capacity, self._usage_locked(), spec.vcpus, spec.memory_mb)
                if problem:
                    raise HostFull(problem)
                paths = InstancePaths.of(self.state_dir, spec.uuid)
                existing = _Instance(spec, paths, State(status.BUILD, status.NOSTATE), time.time())
                self._instances[spec.uuid] = existing
                new = True
            else:
                new = False
        inst = existing
        with inst.lock:
            inst.placed = inst.placed or placed
            if not new:
                return inst.view()
            os.makedirs(inst.paths.root, mode=0o750, exist_ok=True)
            # The spec, once: it never changes. No state yet: an instance directory
            # without one is an instance being built (`_load`), which saves a file.
            _write_json(inst.paths.spec, dataclasses.asdict(inst.spec))
            self._start_vmm(inst)
            return inst.view()

    def stop(self, uuid: str, timeout: float | None = None) -> InstanceView:
        inst = self._find(uuid)
        with inst.lock:
            check_action("stop", inst.state)
            self._stop_vmm(inst, graceful=True, timeout=timeout)
            return inst.view()

    def start(self, uuid: str) -> InstanceView:
        inst = self._find(uuid)
        with inst.lock:
            check_action("start", inst.state)
            self._start_vmm(inst)
            return inst.view()

    def reboot(self, uuid: str, hard: bool) -> InstanceView:
        inst = self._find(uuid)
        with inst.lock:
            check_action("reboot_hard" if hard else "reboot_soft", inst.state)
            if not hard:
                self._control(inst, "system_reset")
                return inst.view()
            if inst.pid is not None:
                self._stop_vmm(inst, graceful=False)
            self._start_vmm(inst)
            return inst.view()

    def pause(self, uuid: str) -> InstanceView:
        return self._control_action(
            uuid, "pause", "stop", State(status.PAUSED, status.POWER_PAUSED)
        )

    def resume(self, uuid: str) -> InstanceView:
        return self._control_action(uuid, "resume", "cont", State(status.ACTIVE, status.RUNNING))

    def delete(self, uuid: str) -> None:
        """Stop the VMM if any and remove the instance; deleting twice is fine."""
        with self._table_lock:
            inst = self._instances.get(uuid)
        if inst is None:
            return
        with inst.lock:
            if inst.pid is not None:
                self._stop_vmm(inst, graceful=False)
            self.driver.release(inst.spec, inst.paths)  # an error fails the Delete: retry it
            shutil.rmtree(inst.paths.root, ignore_errors=True)
            with inst.state_lock:  # the exit watcher reads and writes state under it
                inst.state = State(status.DELETED, status.NOSTATE)
                deleted = inst.view()
            with self._table_lock:
                self._instances.pop(uuid, None)
        self.on_change(deleted)  # outside every lock, as before

    def sync_power_states(self) -> None:
        """Correct drift between our records and the processes (Nova's _sync_power_states).

        A VMM whose events have all reached us is not asked: its state is already
        current, and asking a thousand of them each interval is most of an idle
        dense host's agent CPU."""
        for view in self.list():
            with self._table_lock:
                inst = self._instances.get(view.spec.uuid)
            if inst is None or (inst.pid and self.driver.events_cover(view.spec.uuid, inst.pid)):
                continue
            if not inst.lock.acquire(timeout=0.1):
                continue  # being changed right now; the next sync will see it
            try:
                # A VMM that has gone is the watcher's business; a live one may
                # have been paused or resumed behind our back.
                if inst.pid is not None and self.driver.is_ours(inst.pid, inst.spec.uuid):
                    self._refresh_power_state(inst)
            finally:
                inst.lock.release()

    def close(self) -> None:
        """Stop watching; VMMs keep running (they outlive the agent)."""
        self.driver.close()

    # --- internals ------------------------------------------------------------
    def _find(self, uuid: str) -> _Instance:
        with self._table_lock:
            inst = self._instances.get(uuid)
        if inst is None:
            raise NotFound(f"no instance {uuid} on this host")
        return inst

    def _usage_locked(self) -> Usage:
        used = Usage()
        for inst in self._instances.values():
            used = used.plus(inst.spec.vcpus, inst.spec.memory_mb)
        return used

    def _start_vmm(self, inst: _Instance) -> None:
        self._set_state(inst, State(status.BUILD, status.NOSTATE))
        inst.expected_exit = False
        inst.exited.clear()
        try:
            launch = self._with_image_file(inst.spec)  # first: a refused image needs no tap
            proc = self.driver.launch(launch, inst.paths)
        except (DriverError, ImageFetchError, OSError) as e:  # OSError: cannot exec, …
            with inst.state_lock:
                inst.pid = None
            reason = str(e) if not isinstance(e, OSError) else f"cannot start the VMM: {e}"
            self._set_state(inst, State(status.ERROR, status.NOSTATE, reason))
            return
        with inst.state_lock:  # else a late exit of the previous VMM could clear the new pid
            inst.pid, inst.child = proc.pid, proc
        self._set_state(inst, State(status.ACTIVE, status.RUNNING))
        self.driver.watch(inst.spec.uuid, proc.pid, inst.paths, proc)

    def _with_image_file(self, spec: InstanceSpec) -> InstanceSpec:
        """The spec to launch: an uploaded image (by digest) becomes this host's verified copy."""
        if not spec.image_digest:
            return spec
        if self.images is None:
            raise ImageFetchError("this agent has no image store to fetch uploaded images from")
        return dataclasses.replace(spec, image=self.images.ensure(spec.image_digest))

    def _stop_vmm(self, inst: _Instance, graceful: bool, timeout: float | None = None) -> None:
        """Power button (if graceful), then quit, then SIGKILL; returns once it has exited."""
        inst.expected_exit = True
        pid = inst.pid
        if pid is None:
            return
        if graceful:
            wait = self.stop_timeout if timeout is None else timeout
            if self._try_control(inst, "system_powerdown") and inst.exited.wait(wait):
                return
        if self._try_control(inst, "quit") and inst.exited.wait(_KILL_WAIT):
            return
        self.driver.kill(pid)
        inst.exited.wait(_KILL_WAIT)

    def _control_action(self, uuid: str, action: str, command: str, after: State) -> InstanceView:
        inst = self._find(uuid)
        with inst.lock:
            check_action(action, inst.state)
            self._control(inst, command)
            self._set_state(inst, after)
            return inst.view()

    def _control(self, inst: _Instance, command: str) -> object:
        try:
            return self.driver.control(inst.paths, command)
        except ControlError as e:
            raise st.ActionRefused(f"the VMM did not accept {command}: {e}") from None

    def _try_control(self, inst: _Instance, command: str) -> bool:
        try:
            self.driver.control(inst.paths, command, timeout=2.0)
            return True
        except ControlError:
            return False

    def _runs(self, uuid: str, pid: int) -> bool:
        """Is `pid` still the instance's VMM, and running?"""
        with self._table_lock:
            inst = self._instances.get(uuid)
        return inst is not None and inst.pid == pid and self.driver.is_ours(pid, uuid)

    def _on_qmp_event(self, uuid: str, event: QmpEvent) -> None:
        """A VMM paused or resumed, by us or by anyone with its control socket: its state
        now, not at the next power-state sync. An end is the exit watcher's business."""
        with self._table_lock:
            inst = self._instances.get(uuid)
        if inst is None:
            return
        with inst.state_lock:
            new = st.state_after_event(event.name, inst.state)
            if new is not None:
                self._set_state_locked(inst, new)

    def _refresh_power_state(self, inst: _Instance) -> None:
        try:
            answer = self.driver.control(inst.paths, "query-status", timeout=2.0)
            vmm_status = answer["status"]  # type: ignore[index]
        except (ControlError, KeyError, TypeError):
            return
        new = st.state_from_vmm_status(vmm_status)
        if new != inst.state:
            self._set_state(inst, new)

    def _on_exit(self, uuid: str, pid: int, code: int | None) -> None:
        with self._table_lock:
            inst = self._instances.get(uuid)
        if inst is None:
            return
        record = self.driver.exit_record(inst.paths)
        reason = record[1] if record else self.driver.failure_reason(inst.paths)
        if code is None and record:
            code = record[0]
        with inst.state_lock:
            if inst.pid != pid:
                return  # a previous VMM of this instance
            agent_metrics.vmm_exited(code, inst.expected_exit)
            inst.pid, inst.child = None, None
            if inst.state.status != status.DELETED:
                self._set_state_locked(inst, st.state_after_exit(code, reason, inst.expected_exit))
        inst.exited.set()

    def _set_state(self, inst: _Instance, state: State) -> None:
        with inst.state_lock:
            self._set_state_locked(inst, state)

    def _set_state_locked(self, inst: _Instance, state: State) -> None:
        """Record a new state: on disk for the next agent, and to `on_change` (etcd). A
        state the instance already has is news to neither (a new instance is BUILD from
        the start, and says so again as its VMM starts)."""
        if state == inst.state:
            return
        inst.state = state
        inst.updated_at = time.time()
        if os.path.isdir(inst.paths.root):
            self._persist(inst)
        self.on_change(inst.view())

    def _persist(self, inst: _Instance) -> None:
        """Write the instance's state for the next agent to adopt. Only a change is
        written (each write is a new file renamed over the old, so a crash leaves one or
        the other): what a restarted agent needs is the state, not when it was last set."""
        state = {
            **dataclasses.asdict(inst.state),
            "created_at": inst.created_at,
            "updated_at": inst.updated_at,
        }
        _write_json(inst.paths.state, state)


def _write_json(path: str, data: object) -> None:
    """Replace `path` whole: a reader (or a crash) sees the old text or the new."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _load(paths: InstancePaths) -> tuple[InstanceSpec, State, float]:
    """What an earlier agent persisted of one instance. Without a state file it stopped
    while the instance was being built (the first state is written when the build
    ends), and the spec was written when it was created."""
    with open(paths.spec) as f:
        spec = InstanceSpec(**json.load(f))
    try:
        with open(paths.state) as f:
            raw = json.load(f)
    except FileNotFoundError:
        return spec, State(status.BUILD, status.NOSTATE), os.stat(paths.spec).st_mtime
    state = State(raw["status"], raw["power_state"], raw.get("fault", ""))
    return spec, state, float(raw.get("created_at", time.time()))

"""Running a learner's notebook so that no cell can take the grading run down with it.

nbgrader executes a submission in one Jupyter kernel, cell after cell, and scores a graded cell
by whether it ran without an error. Learners' code can stop that run in three ways, and
``GuardedExecute`` (nbgrader's ``Execute`` preprocessor with these guards) turns each into an
error on the one cell at fault:

- **it runs forever.** Each cell gets ``timeout`` seconds. Then the kernel is interrupted; if it
  comes back (``iopub_timeout`` seconds of grace) the run continues in the same kernel, and if
  the code swallowed the interrupt the kernel is restarted, as below;
- **it kills the kernel** (``os._exit``, a segfault in C code, the out-of-memory killer). A new
  kernel is started and the cells before the fatal one are replayed (their outputs are
  discarded, cells that already failed this way are skipped), so the cells after it run in the
  state they expect;
- **it allocates without bound.** The kernel is launched through ``llmcourse.memory_limit``, so
  a runaway allocation raises ``MemoryError`` in its cell instead of exhausting the machine.

A cell that failed this way gets an ordinary error output named ``CellTimeoutError`` or
``DeadKernelError``, so nbgrader's scoring and its checksums are unchanged: a graded cell with
such an error scores zero, every other cell is graded as nbgrader would.
"""

from __future__ import annotations

import copy
import signal
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import ensure_async, run_sync
from nbformat import NotebookNode
from nbgrader.preprocessors import Execute
from traitlets import Bool, Integer

from llmcourse.memory_limit import DEFAULT_MEMORY_LIMIT, format_size, limited

TIMEOUT_ERROR = "CellTimeoutError"
DEAD_KERNEL_ERROR = "DeadKernelError"
INCIDENTS = (TIMEOUT_ERROR, DEAD_KERNEL_ERROR)
KERNEL_FAILED = "the kernel could not start"


class LimitedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel process starts under a memory limit."""

    memory_limit = Integer(None, allow_none=True, help="bytes; None: no limit").tag(config=True)

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        return limited(super().format_kernel_cmd(extra_arguments), self.memory_limit)


def death_reason(returncode: int | None) -> str:
    """A learner-readable reason for a kernel exit status (negative: killed by a signal)."""
    if returncode is None:
        return "the kernel died"
    if returncode >= 0:
        return f"the kernel died: the code ended its process, exit status {returncode}"
    name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else "?"
    if -returncode == signal.SIGKILL:
        return f"the kernel was killed ({name}), usually because the machine ran out of memory"
    return f"the kernel crashed ({name})"


def _incident(name: str, message: str) -> NotebookNode:
    return NotebookNode(
        output_type="error", ename=name, evalue=message, traceback=[f"{name}: {message}"]
    )


class GuardedExecute(Execute):
    """nbgrader's ``Execute`` with a per-cell time limit, a memory limit, and kernel restarts."""

    memory_limit = Integer(
        DEFAULT_MEMORY_LIMIT, allow_none=True, help="bytes of memory the kernel may map"
    ).tag(config=True)
    # A kernel that ignores the interrupt must raise, to be restarted: not configurable.
    raise_on_iopub_timeout = Bool(True)

    def __init__(self, **kw: Any) -> None:
        kw.setdefault("kernel_manager_class", LimitedKernelManager)
        super().__init__(**kw)
        self._broken: set[int] = set()  # cells skipped when a new kernel replays the notebook
        self._timed_out = False

    def create_kernel_manager(self) -> AsyncKernelManager:
        km = super().create_kernel_manager()
        if isinstance(km, LimitedKernelManager):
            km.memory_limit = self.memory_limit
        return km

    def preprocess(self, nb, resources=None, km=None):
        self._broken = set()
        return super().preprocess(nb, resources, km)

    async def _async_handle_timeout(self, timeout: int, cell: NotebookNode | None = None):
        """Interrupt the kernel; nbclient then waits ``iopub_timeout`` s for it to come back."""
        self._timed_out = True
        await ensure_async(self.km.interrupt_kernel())
        message = f"timed out after {timeout} s"
        return {
            "content": {
                "status": "error",
                "ename": TIMEOUT_ERROR,
                "evalue": message,
                "traceback": [],
            }
        }

    def preprocess_cell(self, cell, resources, index):
        self._check_assign_resources(resources)
        self._timed_out = False
        try:
            cell = self.execute_cell(cell, index, store_history=True)
        except (CellTimeoutError, DeadKernelError) as err:
            # Either the kernel died, or it ignored the interrupt after a timeout.
            timed_out = self._timed_out and not isinstance(err, DeadKernelError)
            message = f"timed out after {self.timeout} s" if timed_out else self._death()
            self._mark(cell, index, TIMEOUT_ERROR if timed_out else DEAD_KERNEL_ERROR, message)
            self._restart(index)
        else:
            if self._timed_out:  # interrupted in time: the same kernel carries on
                self._mark(cell, index, TIMEOUT_ERROR, f"timed out after {self.timeout} s")
        return cell, self.resources

    def _mark(self, cell: NotebookNode, index: int, name: str, message: str) -> None:
        """Replace the cell's errors (a KeyboardInterrupt, nbclient's notice) with ours."""
        self._broken.add(index)
        cell.outputs = [o for o in cell.get("outputs", []) if o.output_type != "error"]
        cell.outputs.append(_incident(name, message))
        self.log.warning("cell %d: %s", index, message)

    def _death(self) -> str:
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        return death_reason(process.poll() if process is not None else None)

    def _restart(self, upto: int) -> None:
        run_sync(self._async_restart)(upto)

    async def _async_restart(self, upto: int) -> None:
        """A fresh kernel, brought to the state the cells before ``upto`` left the old one in."""
        cells, executed = list(self.nb.cells), self.code_cells_executed
        while True:
            if self.km is not None and await ensure_async(self.km.is_alive()):
                await ensure_async(self.km.shutdown_kernel(now=True))
            await self._async_cleanup_kernel()
            self.km = self.create_kernel_manager()
            await self.async_start_new_kernel()
            await self.async_start_new_kernel_client()
            try:
                for i in range(upto):
                    if i in self._broken or cells[i].cell_type != "code":
                        continue
                    self._timed_out, replaying = False, i
                    await self.async_execute_cell(copy.deepcopy(cells[i]), i, store_history=False)
                    if self._timed_out:
                        self._broken.add(i)
                break
            except (CellTimeoutError, DeadKernelError):
                self.log.warning("cell %d failed when replayed: skipped", replaying)
                self._broken.add(replaying)
            finally:
                self.nb.cells[:] = cells  # execute_cell put the replayed copies in the notebook
                self.code_cells_executed = executed
        self._timed_out = False

    async def async_start_new_kernel_client(self):
        try:
            return await super().async_start_new_kernel_client()
        except RuntimeError as err:
            limit = format_size(self.memory_limit)
            raise RuntimeError(
                f"{KERNEL_FAILED} ({err}); is the memory limit ({limit}) too small?"
            ) from err

    start_new_kernel_client = run_sync(async_start_new_kernel_client)

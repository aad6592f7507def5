"""A data-parallel PPO update on a CPU's cores: helper processes each compute one part of every minibatch.

On a CPU, a small MLP's update is many small kernels with Python in between. Intra-op threads split each
kernel but not the Python, nor the loss's elementwise ops (too short to split): on two cores they buy about
1.3×. Threads in one process cannot share the rest either (the GIL is handed over at every kernel). So the
trainer's process and `count` helper processes each take one part of every minibatch, on one core each:

    trainer                                       helper j
    packs the shuffled batch into shared memory
    per minibatch: the advantages' mean and std,
      part j's tile ids  ----------- b"g" ------>  copies its part, computes its gradient
    computes part 0's gradient                     (every part weighted by its share of the rows)
    adds each helper's gradient, in part order  <-- b"d"
    clips, steps the optimizer (the parameters are shared memory: the helpers read the new ones)

That is, to the bit, the serial update with `max_minibatch_size` = one part (tested): the same chunks,
each normalised by the whole minibatch's advantage statistics, summed in the same order.

Helpers start with `spawn` (about two seconds, once per run) and sleep on their pipes outside the update.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import pickle
import signal
import traceback
from dataclasses import dataclass

import torch
import torch.multiprocessing as tmp

from autopilot.config.model import TrainConfig
from autopilot.trainer.optim import clip_and_step, zero_grads
from autopilot.trainer.policy import CPU_BLOCK_ROWS, ActorCritic
from autopilot.trainer.ppo import STAT_KEYS, PackedBatch, advantage_moments, part_gradients

# The fewest rows worth a process of its own: one block of the CPU forward (`policy.CPU_BLOCK_ROWS`).
MIN_PART_ROWS = CPU_BLOCK_ROWS

_GO, _DONE, _QUIT, _HP, _READY, _ERROR = b"g", b"d", b"q", b"h", b"r", b"e"


class UpdateHelperError(RuntimeError):
    """A helper process failed or exited; the message carries its traceback."""


def spawn_bootstrapping() -> bool:
    """Whether this process is a spawned child still importing its parent's main script (where starting
    a process fails): then a script without a `__main__` guard is running again, and must not go on."""
    return bool(getattr(mp.current_process(), "_inheriting", False))


def parts_for(cores: int, minibatch_rows: int) -> int:
    """How many processes (the trainer's included) share each minibatch: one per core, each with at least
    MIN_PART_ROWS rows; 1 means no helpers."""
    return max(1, min(cores, minibatch_rows // MIN_PART_ROWS))


@dataclass
class _Shared:
    """Everything both sides read or write, in shared memory."""

    params: list[torch.Tensor]  # the policy's own parameters (shared in place)
    grads: list[list[torch.Tensor]]  # per helper: a gradient per parameter
    data: torch.Tensor  # the packed batch's [obs | 1] rows
    scalars: torch.Tensor  # and its per-sample rows (logprob, value, advantage, return, actions)
    ids: torch.Tensor  # per helper: its part's tile ids (a prefix of the row)
    sizes: torch.Tensor  # [minibatch rows, tile ids per helper...]
    moments: torch.Tensor  # the minibatch's advantage mean and std + eps
    stats: torch.Tensor  # per helper: its part's weighted stats


class UpdateHelpers:
    """`count` helper processes for `ppo_update(..., helpers=)`. Make one with `start`; `close` it."""

    def __init__(self, policy: ActorCritic, spec: tuple, count: int, batch_rows: int, minibatch_rows: int):
        params = list(policy.parameters())
        for p in params:
            p.share_memory_()  # in place: the optimizer's steps are what the helpers read
        act_rows = policy.act_dim if policy.continuous else 1
        self._shared = _Shared(
            params=params,
            grads=[[torch.zeros_like(p).share_memory_() for p in params] for _ in range(count)],
            data=torch.empty(batch_rows, math.prod(spec[0].shape) + 1).share_memory_(),
            scalars=torch.empty(4 + act_rows, batch_rows).share_memory_(),
            ids=torch.zeros(count, minibatch_rows, dtype=torch.int64).share_memory_(),
            sizes=torch.zeros(1 + count, dtype=torch.int64).share_memory_(),
            moments=torch.zeros(2).share_memory_(),
            stats=torch.zeros(count, len(STAT_KEYS)).share_memory_())
        self.count, self._tile = count, 1
        ctx = tmp.get_context("spawn")
        self._conns, self._procs = [], []
        self._closed = False
        try:
            for index in range(count):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_serve, args=(child, spec, self._shared, index), daemon=True)
                proc.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(proc)
            for conn in self._conns:
                self._expect(conn, _READY, starting=True)
        except BaseException:
            self.close()
            raise

    @classmethod
    def start(cls, policy: ActorCritic, spec: tuple, cores: int, batch_rows: int, minibatch_rows: int
              ) -> UpdateHelpers | None:
        """Helpers for `cores` cores, or None where one process is as good (one core, small minibatches).
        `spec`: the policy's constructor arguments (observation space, action space, hidden size, layers)."""
        parts = parts_for(cores, minibatch_rows)
        return cls(policy, spec, parts - 1, batch_rows, minibatch_rows) if parts > 1 else None

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs]

    # -- the update's side -----------------------------------------------------------------------
    def packed_buffers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Where `PackedBatch` packs the batch for the helpers to read."""
        return self._shared.data, self._shared.scalars

    def begin(self, hp: TrainConfig, tile: int) -> None:
        """An update starts: its hyperparameters and tile size, to every helper."""
        self._tile = tile
        message = _HP + pickle.dumps((hp, tile))
        for j in range(self.count):
            self._send(j, message)

    def _send(self, j: int, message: bytes) -> None:
        try:
            self._conns[j].send_bytes(message)
        except OSError:  # its end of the pipe is closed: it has exited
            raise UpdateHelperError("an update helper process exited unexpectedly") from None

    def minibatch_step(self, policy: ActorCritic, optimizer: torch.optim.Optimizer, packed: PackedBatch,
                       ids: torch.Tensor, hp: TrainConfig) -> torch.Tensor:
        """`ppo.minibatch_step` on the minibatch of tiles `ids`, its parts computed in parallel."""
        shared, tile = self._shared, self._tile
        rows = ids.shape[0] * tile
        parts = ids.split(-(-ids.shape[0] // (self.count + 1)))  # ceil: the serial update's chunks
        mean, scale = advantage_moments(packed.advantages(ids, tile))
        shared.moments[0], shared.moments[1] = mean, scale
        shared.sizes[0] = rows
        pending: list[int] = []  # the helpers computing their part
        try:
            for j, part in enumerate(parts[1:]):
                shared.ids[j, :part.shape[0]] = part
                shared.sizes[1 + j] = part.shape[0]
                self._send(j, _GO)
                pending.append(j)
            zero_grads(optimizer)
            mine = packed.take_tiles(parts[0], tile)
            stats = part_gradients(policy, mine, (mine.advantages - mean) / scale, hp, rows)
            grads = [p.grad for p in shared.params]
            while pending:  # in part order: the serial update's order of summation
                j = pending.pop(0)
                self._expect(self._conns[j], _DONE)
                torch._foreach_add_(grads, shared.grads[j])
                stats = stats + shared.stats[j]
        finally:
            for j in pending:  # this minibatch failed here: take the other helpers' answers (none is left mid-step)
                try:
                    self._expect(self._conns[j], _DONE)
                except UpdateHelperError:
                    pass
        clip_and_step(optimizer, hp.max_grad_norm)
        return stats

    def _expect(self, conn, reply: bytes, starting: bool = False) -> None:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            hint = (" while starting (its error is printed above; a script that trains must run from under "
                    "`if __name__ == \"__main__\":`, since helpers start with spawn, or set "
                    "AUTOPILOT_TORCH_THREADS=1 for a one-process update)") if starting else ""
            raise UpdateHelperError(f"an update helper process exited unexpectedly{hint}") from None
        if message[:1] == _ERROR:
            raise UpdateHelperError(f"update helper failed:\n{message[1:].decode(errors='replace')}")
        if message != reply:
            raise UpdateHelperError(f"update helper answered {message[:20]!r}, expected {reply!r}")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for conn in self._conns:
            try:
                conn.send_bytes(_QUIT)
            except OSError:
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self._conns:
            conn.close()


def _serve(conn, spec: tuple, shared: _Shared, index: int) -> None:
    """A helper's life: a policy whose parameters are the trainer's (shared), its own gradients (shared);
    per b"g", its part of the minibatch's gradient and stats, then b"d"."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the trainer decides when to stop, and tells us
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        torch.set_num_threads(1)
        policy = ActorCritic(*spec)
        grads = shared.grads[index]
        for p, data, grad in zip(policy.parameters(), shared.params, grads, strict=True):
            p.data = data
            p.grad = grad
        act_shape, act_dtype = ((policy.act_dim,), torch.float32) if policy.continuous else ((), torch.int64)
        packed = PackedBatch.over(shared.data, shared.scalars, act_shape, act_dtype)
        hp, tile = TrainConfig(), 1
        conn.send_bytes(_READY)
        while True:
            message = conn.recv_bytes()
            if message == _QUIT:
                return
            if message[:1] == _HP:
                hp, tile = pickle.loads(message[1:])
                continue
            mine = packed.take_tiles(shared.ids[index, :int(shared.sizes[1 + index])], tile)
            torch._foreach_zero_(grads)
            advantages = (mine.advantages - shared.moments[0]) / shared.moments[1]
            shared.stats[index].copy_(part_gradients(policy, mine, advantages, hp, int(shared.sizes[0])))
            conn.send_bytes(_DONE)
    except EOFError:
        return  # the trainer is gone: nothing to report to
    except BaseException:  # noqa: BLE001 - reported to the trainer, which raises it
        try:
            conn.send_bytes(_ERROR + traceback.format_exc().encode())
        except OSError:
            pass

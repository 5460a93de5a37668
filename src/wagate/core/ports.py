"""The ports the use cases depend on. Engines, stores and wake-up channels implement them."""

from __future__ import annotations

from collections.abc import Collection, Mapping, MutableSequence, Sequence, Set
from datetime import datetime, timedelta
from typing import Any, Protocol

from wagate.core.model import (
    AvatarImage,
    AvatarJob,
    AvatarResult,
    ChatId,
    Contact,
    DeliveryAttempt,
    Instance,
    InstanceSettings,
    InstanceState,
    Notification,
    NotificationStatus,
    SandboxAccount,
    SandboxFault,
    SandboxGroup,
    SandboxRows,
    StoredImage,
)


class Engine(Protocol):
    """The adapter that talks to WhatsApp (or a simulation of it) for one kind of instance.

    Expected outcomes are values: an avatar that is hidden, missing or rate limited is an
    `AvatarResult`, never an exception. An engine may take as long as WhatsApp does; the caller
    bounds every call with its own timeout and cancels it, so engines must be cancellation-safe.
    """

    name: str

    async def fetch_avatar(self, instance: Instance, chat: ChatId) -> AvatarResult:
        """Look up the avatar of `chat` as seen by `instance`'s account, with its image bytes."""
        ...

    async def fetch_avatars(
        self,
        instance: Instance,
        chats: Sequence[ChatId],
        answers: MutableSequence[AvatarResult | None],
    ) -> None:
        """`fetch_avatar` for several chats at once (the avatar worker's batch of one
        instance's jobs): sets `answers[i]` to the result for `chats[i]` as soon as it is known.

        The caller bounds the whole call with one deadline and cancels it; answers set by then
        are kept, the others are timed out. An output list rather than a returned one, so that
        one chat WhatsApp never answers does not cost the answers of the others. An engine
        without a batch path of its own delegates to `core.avatars.fetch_each`.
        """
        ...

    async def state(self, instance: Instance) -> InstanceState:
        """The account's authorization state."""
        ...

    async def check_whatsapp(self, instance: Instance, phone: str) -> bool:
        """Whether `phone` has a WhatsApp account."""
        ...

    async def contacts(self, instance: Instance) -> list[Contact]:
        """The account's contacts and groups."""
        ...

    async def contact_name(self, instance: Instance, chat: ChatId) -> str | None:
        """The display name of `chat`, or None if WhatsApp does not know it."""
        ...

    async def aclose(self) -> None:
        """Release connections and tasks."""
        ...


class ImageStore(Protocol):
    """Avatar images, addressed by the SHA-256 of their bytes."""

    async def put(self, image: AvatarImage) -> StoredImage:
        """Store `image` (a no-op when the same bytes are stored already)."""
        ...

    async def load(self, digest: str) -> AvatarImage | None:
        """The image with this digest, or None."""
        ...

    async def open(self, file_name: str) -> tuple[StoredImage, bytes] | None:
        """The image behind a served file name `<digest>.<ext>`, or None if unknown."""
        ...


class Store(Protocol):
    """Durable state. Every method commits before it returns; a method that writes several rows
    does so in one transaction."""

    async def aclose(self) -> None: ...

    # -- metadata shared between the server and CLI processes --------------------------------
    async def get_meta(self, key: str) -> str | None: ...
    async def set_meta(self, key: str, value: str) -> None: ...

    # -- instances ----------------------------------------------------------------------------
    async def create_instance(self, instance: Instance) -> None:
        """Insert a new instance. Raises `InstanceConflict` if its id or phone is taken."""
        ...

    async def get_instance(self, instance_id: int) -> Instance | None: ...
    async def get_instance_by_phone(self, phone: str) -> Instance | None: ...
    async def list_instances(self) -> list[Instance]: ...

    async def delete_instance(self, instance_id: int) -> bool:
        """Delete the instance with its jobs and notifications. False if it did not exist."""
        ...

    async def update_instance(
        self,
        instance_id: int,
        *,
        api_token: str | None = None,
        webhook_signing_secret: str | None = None,
        state: InstanceState | None = None,
        settings: InstanceSettings | None = None,
    ) -> Instance | None:
        """Change the given fields; returns the updated instance, or None if it does not exist."""
        ...

    # -- sandbox world ------------------------------------------------------------------------
    async def merge_sandbox_world(
        self,
        accounts: Sequence[SandboxAccount],
        groups: Sequence[SandboxGroup],
        faults: Sequence[SandboxFault],
    ) -> None:
        """Insert or replace accounts by phone, groups by chat id and faults by chat id."""
        ...

    async def get_sandbox_account(self, phone: str) -> SandboxAccount | None: ...
    async def get_sandbox_account_by_lid(self, lid: str) -> SandboxAccount | None: ...
    async def get_sandbox_group(self, chat_id: str) -> SandboxGroup | None: ...
    async def get_sandbox_fault(self, chat_id: str) -> SandboxFault | None: ...
    async def get_sandbox_rows(self, chats: Sequence[ChatId]) -> SandboxRows:
        """The faults, accounts (by phone for personal chats, by lid for `@lid` chats) and groups
        of these chats, in one read."""
        ...

    async def list_sandbox_accounts(self) -> list[SandboxAccount]: ...
    async def list_sandbox_groups(self) -> list[SandboxGroup]: ...

    # -- avatar jobs --------------------------------------------------------------------------
    async def enqueue_avatar_job(self, instance_id: int, chat_id: str) -> AvatarJob:
        """Record an accepted getAvatarAsync request durably."""
        ...

    async def claim_avatar_jobs(
        self, limit: int, lease: timedelta, *, per_instance: int
    ) -> list[AvatarJob]:
        """Claim the jobs of up to `limit` instances, only of instances with no live claim,
        oldest instance queue first: each one's oldest `per_instance` jobs (all, if it has
        fewer), every one with `claimed_until = now + lease`; returned by id. An instance's
        batch then runs while its next jobs wait, so its jobs complete in order, and no two
        claimers (processes, nodes) ever hold jobs of one instance at the same time. A claim
        whose lease has expired (its worker died) is claimed again, whole."""
        ...

    async def complete_avatar_jobs(
        self, completions: Sequence[tuple[AvatarJob, Mapping[str, Any]]]
    ) -> list[Notification | None]:
        """In one transaction, for each (job, notification body) in order: remove the job and
        queue its notification, receipt ids growing in list order. Per completion, its
        notification, or None (nothing written for it) if the job was gone: completed by
        another worker that took it over after a lease expired, or its instance deleted."""
        ...

    async def complete_and_claim_avatar_jobs(
        self,
        completions: Sequence[tuple[AvatarJob, Mapping[str, Any]]],
        lease: timedelta,
        *,
        per_instance: int,
    ) -> tuple[list[Notification | None], list[AvatarJob]]:
        """`complete_avatar_jobs`, then in the same transaction `claim_avatar_jobs(1, lease,
        per_instance=...)`: a finishing batch hands its worker the next one (the oldest queue's,
        perhaps its own instance's next jobs) without a transaction of its own."""
        ...

    async def release_avatar_jobs(self, jobs: Sequence[AvatarJob]) -> None:
        """Give up the claim on `jobs` (as a claim returned them), so that they are claimable
        at once. A job claimed again since (its attempt count moved on) or completed is left
        alone."""
        ...

    async def count_avatar_jobs(self, instance_id: int | None = None) -> int: ...

    async def release_leases(self) -> None:
        """Drop every avatar-job claim and push-lane lease. Only for a server that knows it is
        the sole one on this database (SQLite): after a crash its work resumes at once instead
        of when the dead process's leases run out."""
        ...

    # -- notifications ------------------------------------------------------------------------
    async def head_notification(self, instance_id: int) -> Notification | None:
        """The oldest queued notification of the instance."""
        ...

    async def delete_notification(self, instance_id: int, receipt_id: int) -> bool: ...
    async def delete_notifications(self, receipt_ids: Mapping[int, Collection[int]]) -> int:
        """Delete queued notifications, named per instance id, in one transaction; how many
        were there."""
        ...

    async def count_notifications(self, instance_id: int) -> int: ...
    async def clear_notifications(self, instance_id: int) -> int: ...

    async def dead_letter_expired(self, created_before: datetime) -> int:
        """Move queued notifications created before the cutoff to the dead letters."""
        ...

    async def delete_dead_letters(self, created_before: datetime, limit: int) -> int:
        """Delete up to `limit` dead letters created before the cutoff, oldest first; returns
        how many."""
        ...

    async def list_notifications(
        self, instance_id: int, status: NotificationStatus, limit: int = 100
    ) -> list[Notification]: ...

    async def replay_dead(self, instance_id: int, receipt_ids: Sequence[int] | None = None) -> int:
        """Queue dead notifications again (all of the instance's, or those named) at the tail,
        under new receipt ids; returns how many were queued."""
        ...

    # -- push delivery ------------------------------------------------------------------------
    # An instance whose webhook URL is set has one delivery lane: whoever holds its lease pushes
    # its queued notifications in receipt id order, one in flight. A holder renews well before
    # expiry; the store renews and frees only a lease its own claim set (the expiry it wrote is
    # the token), so a holder that stalled past its lease learns it lost the lane and stops.

    async def claim_push_lanes(
        self, limit: int, lease: timedelta, named: Collection[int] | None = None
    ) -> list[int]:
        """Claim up to `limit` instance lanes: instances in push mode (non-empty webhook URL) with
        at least one queued notification whose oldest queued notification is due
        (next_attempt_at is NULL or <= now) and whose lane is free (no lease, or lease expired);
        with `named`, only lanes of those instances (a claim's cost then follows their number,
        not the number of push-mode instances). Sets the lease to now + lease and returns the
        instance ids, the instance with the oldest due head (lowest receipt id) first. Two
        claimers (processes or nodes) never get the same lane while its lease is live."""
        ...

    async def renew_push_lane(self, instance_id: int, lease: timedelta) -> bool:
        """Extend the lane's lease to now + lease if this store's claim still holds it; False
        (and nothing changed) if it does not: the lease lapsed and another claimer took the
        lane, or the lane was released, or the instance is unknown. A holder that gets False
        must stop pushing the lane."""
        ...

    async def release_push_lane(self, instance_id: int, delivered: Sequence[int] = ()) -> None:
        """Take the `delivered` notifications off the queue (as `mark_delivered`) and free the
        lane at once, in one transaction: it is claimable again as soon as its head is due.
        A lease this store no longer holds (taken over after it lapsed) is left to its new
        holder; the delivered notifications still leave the queue."""
        ...

    async def queued_notifications(
        self, instance_id: int, limit: int, after_receipt_id: int = 0
    ) -> list[Notification]:
        """Queued notifications of the instance with receipt_id > after_receipt_id, oldest
        first, at most `limit`. One statement."""
        ...

    async def mark_delivered(self, instance_id: int, receipt_ids: Sequence[int]) -> int:
        """Remove delivered notifications of the instance (queued ones only: dead letters and
        other instances' ids are left alone); returns how many. One statement."""
        ...

    async def record_delivery_failure(
        self, instance_id: int, receipt_id: int, error: str, retry_at: datetime
    ) -> None:
        """On the queued notification: attempts += 1, last_error = error (truncated to 500
        characters), next_attempt_at = retry_at. Does not release the lane; a no-op if the
        notification is no longer queued."""
        ...

    async def next_push_due(self) -> datetime | None:
        """The earliest next_attempt_at among the heads of push-mode instances with free lanes,
        or None. Heads never tried (NULL) are ignored: they are claimable now. Lets a dispatcher
        sleep exactly until a retry is due; the value may be in the past."""
        ...


class WebhookSender(Protocol):
    """POSTs notification bodies to receivers."""

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, lane: str = ""
    ) -> DeliveryAttempt:
        """One attempt, bounded by the configured timeout. Never raises for what a receiver or
        the network does (refused address, timeout, connection error): that is the attempt.
        Attempts of one `lane` (an instance) reuse its keep-alive connection."""
        ...

    async def check_url(self, url: str) -> None:
        """Raise `ValidationFailed` if `url` can never receive webhooks (its address is refused)."""
        ...

    async def aclose(self) -> None: ...


# -- rate limits ------------------------------------------------------------------------------


class RateLimits(Protocol):
    """Token buckets per (instance, method): a burst of `per_second` calls, refilled at
    `per_second` calls a second. Whether buckets are per process or shared by every node is
    the implementation's to say."""

    async def check(self, instance_id: int, method: str, per_second: float) -> None:
        """Take one token; raises `RateLimited(retry_after_s)` when the bucket is empty."""
        ...

    async def aclose(self) -> None: ...


# In the sets `WakeUps.wait_push` and `wait_job` return: no instance has this id; it stands for
# "any instance".
ANY_INSTANCE = 0


class WakeUps(Protocol):
    """Shortens waits: a long poll or a worker wakes when new work may be there.

    A wake-up is only a hint; whoever waits re-reads the store, and polls it anyway, so a lost
    wake-up costs latency, never data.
    """

    async def notification_added(self, instance_id: int, *, pushed: bool = True) -> None:
        """Wake the instance's long polls, and the push dispatcher unless `pushed` is False
        (the caller knows the instance polls: waking the dispatcher would only cost it a lane
        claim that finds nothing)."""
        ...

    def notification_mark(self, instance_id: int) -> object:
        """A mark for `wait_notification(..., since=mark)`. Taken before reading the queue, it
        makes a notification added after the read started end that wait at once, even if it was
        added before the wait began."""
        ...

    def notified_since(self, mark: object) -> bool:
        """Whether a notification of the mark's instance was added since the mark was taken."""
        ...

    async def wait_notification(
        self, instance_id: int, timeout_s: float, since: object | None = None
    ) -> None: ...
    def wake_long_polls(self) -> None:
        """Wake every long poll waiting in this process, and only here (the server is
        shutting down: its polls answer instead of holding the shutdown up)."""
        ...

    async def job_added(self, instance_id: int = ANY_INSTANCE) -> None:
        """Wake the avatar job worker: the instance has a new job (`ANY_INSTANCE`: some
        instance may have)."""
        ...

    async def wait_push(self, timeout_s: float) -> Set[int]:
        """Wait for push work: a notification was added or an instance's webhook settings changed
        (`notification_added` wakes this too). Returns the instances named by the wake-ups
        since the last wait (empty if it timed out); `ANY_INSTANCE` among them stands for
        "any"."""
        ...

    async def wait_job(self, timeout_s: float) -> Set[int]:
        """Wait for avatar job work. Returns the instances named by the wake-ups since the last
        wait (empty if it timed out); `ANY_INSTANCE` among them stands for "any"."""
        ...

    async def aclose(self) -> None: ...


class PipelineEvents(Protocol):
    """What the workers did, counted for `/metrics` (the HTTP edge counts its own requests).
    Called on the workers' paths, so an implementation must be cheap and never raise."""

    def avatar_jobs_answered(self, count: int) -> None:
        """getAvatarAsync requests whose avatarInfo notification was queued."""
        ...

    def avatar_lookups_given_up(self, count: int) -> None:
        """Lookups that failed inside wagate on every attempt, answered as timed out."""
        ...

    def webhook_delivered(self) -> None:
        """A receiver accepted a webhook (2xx)."""
        ...

    def webhook_attempt_failed(self) -> None:
        """A webhook attempt failed; a retry is scheduled."""
        ...

    def notifications_dead_lettered(self, count: int) -> None: ...

    def dead_letters_deleted(self, count: int) -> None: ...


class UncountedEvents:
    """`PipelineEvents` for processes that serve no `/metrics` (the CLI, tests)."""

    def avatar_jobs_answered(self, count: int) -> None:
        pass

    def avatar_lookups_given_up(self, count: int) -> None:
        pass

    def webhook_delivered(self) -> None:
        pass

    def webhook_attempt_failed(self) -> None:
        pass

    def notifications_dead_lettered(self, count: int) -> None:
        pass

    def dead_letters_deleted(self, count: int) -> None:
        pass

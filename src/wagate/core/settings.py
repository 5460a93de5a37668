"""Changing an instance's settings: the webhook URL is vetted, and push starts at once."""

from __future__ import annotations

from wagate.core.instances import InstanceService
from wagate.core.model import Instance, InstanceSettings
from wagate.core.notifications import NotificationService
from wagate.core.ports import WakeUps, WebhookSender


class SettingsService:
    def __init__(
        self,
        instances: InstanceService,
        notifications: NotificationService,
        sender: WebhookSender,
        wakeups: WakeUps,
    ) -> None:
        self._instances = instances
        self._notifications = notifications
        self._sender = sender
        self._wakeups = wakeups

    async def vet_new(self, settings: InstanceSettings) -> None:
        """Vet the settings an instance is about to be created with, as `change` vets a
        change. Raises `ValidationFailed`."""
        if settings.webhook_url:
            await self._sender.check_url(settings.webhook_url)

    async def change(self, instance: Instance, settings: InstanceSettings) -> Instance:
        """Store the new settings. Raises `ValidationFailed` for a webhookUrl whose address is
        refused. Setting a webhookUrl starts pushing what is queued; clearing it makes the queue
        pollable again."""
        url = settings.webhook_url
        if url != instance.settings.webhook_url:
            await self.vet_new(settings)
        updated = await self._instances.set_settings(instance.id, settings)
        if url != instance.settings.webhook_url:
            # Pushing takes notifications off the queue behind the polling window's back. The
            # long polls waiting on it, woken below, see the push mode when they check their
            # instance again (the instance service's cache has the new settings already).
            self._notifications.forget(instance.id)
            # A lane must not push what the client deleted from its window. The settings are
            # saved already: if that write fails, it is retried, and a lane may push some of
            # those meanwhile (at least once), so the change is not reported as failed.
            await self._notifications.try_write_deferred_deletes("retrying; pushing meanwhile")
            await self._wakeups.notification_added(instance.id)
        return updated

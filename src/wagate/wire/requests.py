"""Request models of the GREEN-API methods wagate serves. They also document `/openapi.json`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

YesNo = Literal["yes", "no"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=False)


class ChatIdBody(_Body):
    """Body of getAvatar, getAvatarAsync and getContactInfo."""

    chatId: str = Field(description="`<digits>@c.us`, `<digits>@lid` or a group `...@g.us`")


class CheckWhatsappBody(_Body):
    phoneNumber: int = Field(description="The full international number, digits only")


class SetSettingsBody(_Body):
    """Any subset of the writable settings, at least one."""

    webhookUrl: str | None = Field(default=None, max_length=2048)
    webhookUrlToken: str | None = Field(default=None, max_length=1024)
    delaySendMessagesMilliseconds: int | None = Field(default=None, ge=500, le=86_400_000)
    countryInstance: str | None = Field(default=None, max_length=8)
    markIncomingMessagesReaded: YesNo | None = None
    markIncomingMessagesReadedOnReply: YesNo | None = None
    sharedSession: YesNo | None = None
    outgoingWebhook: YesNo | None = None
    outgoingMessageWebhook: YesNo | None = None
    outgoingAPIMessageWebhook: YesNo | None = None
    incomingWebhook: YesNo | None = None
    deviceWebhook: YesNo | None = None
    statusInstanceWebhook: YesNo | None = None
    stateWebhook: YesNo | None = None
    enableMessagesHistory: YesNo | None = None
    keepOnlineStatus: YesNo | None = None
    pollMessageWebhook: YesNo | None = None
    incomingBlockWebhook: YesNo | None = None
    incomingCallWebhook: YesNo | None = None
    editedMessageWebhook: YesNo | None = None
    deletedMessageWebhook: YesNo | None = None


class CreateInstanceBody(SetSettingsBody):
    """Partner createInstance: the settings of the new instance, plus its name."""

    name: str | None = Field(default=None, max_length=256)


class DeleteInstanceBody(_Body):
    idInstance: int

"""HTTP layer of the account's own settings: the webhook signing key."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from callvault.accounts.models import Account
from callvault.auth import current_account
from callvault.errors import error_responses

router = APIRouter(prefix="/v2", tags=["Webhooks"], responses=error_responses(401))


class WebhookSigningKey(BaseModel):
    public_key: str = Field(
        description="Base64 of the account's 32-byte Ed25519 public key; verifies the "
        "telnyx-signature-ed25519 header of every webhook."
    )


class WebhookSigningKeyResponse(BaseModel):
    data: WebhookSigningKey


@router.get(
    "/webhook_signing_key",
    response_model=WebhookSigningKeyResponse,
    operation_id="GetWebhookSigningKey",
    summary="The public key that verifies your webhooks",
)
async def webhook_signing_key(
    account: Account = Depends(current_account),
) -> WebhookSigningKeyResponse:
    return WebhookSigningKeyResponse(data=WebhookSigningKey(public_key=account.webhook_public_key))

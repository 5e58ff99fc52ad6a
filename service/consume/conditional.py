"""A conditional UpdateItem on the lease table (I/O), shared by the shards' leases
(consume/leases.py) and the committer items (consume/committer_lease.py): a refused
condition means another worker changed the item, which both read as a lost lease."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from service.aws import error_code
from service.errors import LeaseLostError

CONDITION_FAILED = "ConditionalCheckFailedException"


async def conditional_update(
    dynamodb: Any,
    table: str,
    key: str,
    *,
    update: str,
    condition: str,
    values: dict[str, Any],
    lost: str,
    returns: bool = False,
) -> dict[str, Any]:
    """UpdateItem of item ``key`` if ``condition`` holds (``#o`` names ``owner``); the new
    attributes when ``returns``. Raises LeaseLostError(``lost``) when the condition fails."""
    kwargs: dict[str, Any] = {
        "TableName": table,
        "Key": {"shard_id": {"S": key}},
        "UpdateExpression": update,
        "ConditionExpression": condition,
        "ExpressionAttributeValues": values,
    }
    if "#o" in update or "#o" in condition:
        kwargs["ExpressionAttributeNames"] = {"#o": "owner"}
    if returns:
        kwargs["ReturnValues"] = "ALL_NEW"
    try:
        resp = await dynamodb.update_item(**kwargs)
    except ClientError as exc:
        if error_code(exc) == CONDITION_FAILED:
            raise LeaseLostError(lost) from None
        raise
    return dict(resp.get("Attributes", {}))

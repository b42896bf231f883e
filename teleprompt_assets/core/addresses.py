"""Ethereum addresses entering the system are accepted only in their EIP-55 checksummed spelling.

The checksum is what catches a mistyped or truncated address before it is signed into an
attestation, pinned as the expected attester or paid a reward. Every place an address comes in from
outside (configuration, CLI arguments, a bundle being verified, a reward leaf about to be signed)
goes through :func:`checksummed`. An all-lowercase or all-uppercase address is refused as well: it
carries no checksum to check. Contributor tags on traces are checked at ingestion
(:mod:`teleprompt_assets.ingest.traces`), where a bad one quarantines the trace instead of failing the run.

Errors never suggest the checksummed spelling: for a mistyped address that is the valid-looking
address of someone else.

A contributor (someone paid a reward weight) must also be an address someone can hold a key for:
:func:`contributor_problem` refuses the zero address and the precompile range, where a reward
would burn (no key signs for them, and a claim contract would pay tokens nobody can move).
"""

from __future__ import annotations

import re
from typing import Any

from eth_utils import to_checksum_address

_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


class AddressError(ValueError):
    """An address is malformed or not EIP-55 checksummed; the message starts with where it came from."""


def address_problem(value: Any) -> str | None:
    """Why ``value`` is not a checksummed address, or None when it is one."""
    if not isinstance(value, str) or not _HEX_ADDRESS.fullmatch(value):
        shown = repr(value)
        return f"{shown[:64]}{'…' if len(shown) > 64 else ''} is not a 20-byte 0x-prefixed hex address"
    if value != to_checksum_address(value):
        return f"{value} is not EIP-55 checksummed (copy the address with its mixed case from where it was issued)"
    return None


# The zero address and the precompiles: 0x01-0x0a (since Cancun), 0x0b-0x11 (BLS12-381, since
# Prague) and 0x100 (P256VERIFY, RIP-7212 on several L2s). Everything up to 0x…0100 is refused, so a
# precompile added in that range later is refused already.
RESERVED_ADDRESS_MAX = 0x100


def reserved_address_problem(value: str) -> str | None:
    """Why the well-formed address ``value`` cannot receive a reward (the zero address, a precompile), or None."""
    number = int(value, 16)
    if number == 0:
        return f"{value} is the zero address: a reward paid to it burns"
    if number <= RESERVED_ADDRESS_MAX:
        return f"{value} is a precompile address (0x…01 to 0x…{RESERVED_ADDRESS_MAX:04x} are reserved): a reward paid to it burns"
    return None


def contributor_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a contributor: not a checksummed address, or one nobody holds a key for."""
    return address_problem(value) or reserved_address_problem(value)


def checksummed(value: Any, where: str) -> str:
    """``value`` itself when it is an EIP-55 checksummed address; raises :class:`AddressError` naming ``where``."""
    problem = address_problem(value)
    if problem is not None:
        raise AddressError(f"{where}: {problem}")
    return value


def contributor(value: Any, where: str) -> str:
    """``value`` when it may be paid a reward (:func:`contributor_problem`); raises :class:`AddressError` naming ``where``."""
    problem = contributor_problem(value)
    if problem is not None:
        raise AddressError(f"{where}: {problem}")
    return value

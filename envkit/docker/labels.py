"""The labels envkit puts on everything it creates; anything without them is never touched.

Images carry the project (the stack file's ``[stack] name``), the image's name
in the stack and its content key. Containers and networks carry the stack id
(the name plus a hash of the state directory: one per checkout) and the
project; containers also carry their service, the hash of its inputs and the
checkout they belong to.
"""

from __future__ import annotations

PROJECT = "envkit.project"  # the stack file's [stack] name: images, containers, networks
STACK = "envkit.stack"  # the stack id (one checkout's stack): containers and networks
IMAGE = "envkit.image"  # an image's name under [images]
KEY = "envkit.key"  # an image's content key
BUILDER = "envkit.builder"  # which builder made an image: assembler, classic or recipe
SERVICE = "envkit.service"
INPUTS = "envkit.inputs"  # hash of a service's settings and image identity
ROOT = "envkit.root"  # the checkout a stack's containers belong to
ROLE = "envkit.role"  # a stack's container that is no service: "warden" (envkit.stack.warden)
LOOKUP = "envkit.lookup"  # a container the assembler looks into a parent image through (never started)


def selector(label: str, value: str) -> str:
    """A ``label=value`` filter for the daemon's list calls."""
    return f"{label}={value}"

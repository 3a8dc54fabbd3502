"""The embedded (`filesystem://`) broker, with messages written atomically.

Kombu's filesystem transport writes a message file in place, so a worker polling the folder can
move and read it before the writer has finished: an empty or cut JSON message kills the worker.
Here each message is written under a name no reader picks up, then renamed into place.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

SCHEME = "vamufs"


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # Readers take only files named "<stamp>.<queue>.msg"; a leading dot hides this one.
        partial = os.path.join(self.data_folder_out, f".{name}.partial")
        with open(partial, "wb") as f:
            f.write(str_to_bytes(dumps(payload)))
        os.replace(partial, final)


class Transport(filesystem.Transport):
    Channel = Channel


def register() -> None:
    TRANSPORT_ALIASES[SCHEME] = "vamu_tasks.embedded_broker:Transport"

"""What the controllers are given by injection: one :class:`Platform` per API process."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.api.deploys import Deploys
from conveyor.api.validation import RequestValidators
from conveyor.queueing.client import QueueClient
from conveyor.queueing.key_store import KeyStore
from conveyor.queueing.maps import MapStore
from conveyor.queueing.waiters import Wakeups
from conveyor.settings import Settings
from conveyor.store.deployer import Deployer
from conveyor.store.served import Served
from conveyor.webhooks.intake import WebhookIntake


@dataclass
class Platform:
    """What the controllers are given: settings, what serves, the queueing seam."""

    settings: Settings
    functions: Served
    deployer: Deployer
    deploys: Deploys  # PUT /functions/{name}: accepted, then run here, outcome in Redis
    queue: QueueClient
    intake: WebhookIntake
    validators: RequestValidators
    maps: MapStore
    map_events: Wakeups  # a map job changed
    keys: KeyStore | None = None  # None: [api] auth = "none"
    loaded: bool = False  # the functions found at start have been inspected

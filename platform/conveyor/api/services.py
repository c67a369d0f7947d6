"""What the controllers are given by injection: one :class:`Platform` per API process."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.api.deploys import Deploys
from conveyor.api.readers import OpenResponses
from conveyor.api.validation import RequestValidators
from conveyor.auth.db import ApiKeyStore
from conveyor.db.subscription import Waiters
from conveyor.files.intake import FileIntake
from conveyor.invocations.client import InvocationClient
from conveyor.maps.db import MapStore
from conveyor.pipelines.db import Runs
from conveyor.pipelines.plan import Planner
from conveyor.schedules.db import ScheduleStore
from conveyor.settings import Settings
from conveyor.store.deployer import Deployer
from conveyor.store.served import Served
from conveyor.streams.db import StreamReader
from conveyor.trainings.db import TrainingIndex
from conveyor.webhooks.intake import WebhookIntake


@dataclass
class Platform:
    """What the controllers are given: settings, what serves, the invocations client."""

    settings: Settings
    functions: Served
    deployer: Deployer
    deploys: Deploys  # PUT /functions/{name}: accepted, then run here, outcome in Redis
    invocations: InvocationClient
    intake: WebhookIntake
    validators: RequestValidators
    maps: MapStore
    map_events: Waiters[str]  # a map job changed (the payload is its id)
    files: FileIntake  # uploads, and the file fields of inputs
    streams: StreamReader  # streaming invocations' events
    planner: Planner  # a pipeline run's plan: its steps' versions, frozen when accepted
    runs: Runs  # pipeline runs' steps
    schedules: ScheduleStore  # each schedule's last fired tick and runs
    trainings: TrainingIndex  # each function's trainings, to list them
    open_responses: OpenResponses  # downloads and event streams held open, capped
    api_keys: ApiKeyStore | None = None  # None: [api] auth = "none"
    loaded: bool = False  # the functions found at start have been inspected

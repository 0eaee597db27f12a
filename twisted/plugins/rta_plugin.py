# Only binds the name: an import error here would make twistd say "Unknown command: rta".
from twisted.application.service import ServiceMaker

rta = ServiceMaker(
    "twisted-rta",
    "twisted_rta.tap",
    "Real-time analytics ingestion and aggregation daemon",
    "rta",
)

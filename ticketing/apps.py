from django.apps import AppConfig


class TicketingConfig(AppConfig):
    name = "ticketing"
    verbose_name = "Ticketing"

    def ready(self) -> None:
        from events.edge.channels import register_kind
        from ticketing.streams import TicketListStream, list_frame, query_from_spec

        # The live list can be held by the stream edge (events.edge).
        register_kind(TicketListStream.kind, build=query_from_spec, frame=list_frame)

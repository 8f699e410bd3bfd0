"""The stream edge: list and notification streams held by Pushpin instead of a worker
(SSE_EDGE=pushpin).

A stream that comes in through Pushpin is authenticated, limited and opened by a worker
as usual (connected, then the snapshot or the missed events), and then handed off: the
response carries GRIP instructions telling Pushpin to hold the connection on the
stream's channel, after the position in the channel's chain the opening covered. The
edge publisher follows each tenant's log and publishes each event of a channel's chain
(`channels.chain_of`) once per channel, with its predecessor in the chain as `prev-id`;
Pushpin writes it to every connection held on the channel. A connection that missed
something (its position is not the item's predecessor) is recovered by Pushpin calling
the channel's link back, which answers the events since.

- `grip`: the protocol (the request's signature, the hold headers, the stream's link);
- `channels`: which channels are held, in Redis, and how each kind of channel is rendered;
- `handoff`: the hand-off of a stream and the link Pushpin calls back;
- `publisher`: the process that publishes the log to Pushpin (`manage.py publish_to_edge`).

docs/architecture.md ("The stream edge") has the picture and what differs from a stream
a worker serves."""

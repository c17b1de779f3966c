"""Media-server hand-off: finished calls from a media server's spool become ingested recordings.

- `callvault handoff rtpengine`: rtpengine's pcap recording spool (metadata file + pcap per
  call) is decoded here (`pcap`, `rtp`, `sdp`, `spoolmeta`, `codecs`, `timeline`, `encode`,
  `convert`) and posted to the ingest endpoint (`client`, `runner`, `spool`).
- `callvault handoff watch`: any media server drops `NAME.wav|mp3` + `NAME.json` (`watch`).
- `POST /internal/v1/rtpengine/recordings`: rtpengine >= 11.3's recording daemon notifies with the
  finished file (`endpoints`).
docs/media-servers.md has the operator's view.
"""

"""The ground station (`firespotter listen`): it hears every drone, acknowledges fire messages, keeps a fleet
fire map and serves the live ground view.

    station.py     GroundStation: validate, deduplicate, acknowledge; each drone's status
    transports.py  Zenoh and MQTT listeners feeding the station
    fleet.py       the fleet fire map (union of recent geo polygons), GeoJSON
    view.py        the ground view's model: drones, tracks, thumbnails, fire age bands, the time slider
    events.py      Server-Sent Events fan-out to the open pages
    http.py        the HTTP server: page, events, exports, tiles; access token and exposure checks
    tiles.py       map backgrounds (URL template, XYZ folder, MBTiles)
    export.py      JSON without NaN, KML
    console.py     the live table in a terminal
    run.py         the station's main loop: map file, table, clean shutdown
"""

"""The `prometheus` meter: the same series as the dcgm meter, from a Prometheus
server's HTTP API, for fleets where only Prometheus can be reached."""

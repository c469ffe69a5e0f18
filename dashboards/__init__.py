"""meshlens dashboards: Grafana dashboards and provisioning as files."""

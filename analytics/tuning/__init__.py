"""Policy suggestions and the closed tuning loop: propose, replay, accept, verify, roll back."""

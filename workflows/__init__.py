"""The LWS retraining workflow: the KFP pipeline, its compiled YAML, the local runner, submit and schedule."""

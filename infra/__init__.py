"""Terraform modules (HCL) and the one adapter that runs Terraform."""

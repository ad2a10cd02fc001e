terraform {
  # terraform_data is built in: this module needs no provider plugin and runs offline.
  required_version = ">= 1.5"
}

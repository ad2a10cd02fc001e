variable "name" {
  description = "Name of the local cluster."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,28}[a-z0-9]$", var.name))
    error_message = "The name must be 3 to 30 characters: lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "data_dir" {
  description = "Absolute path of the directory that holds the cluster's hubs."
  type        = string

  validation {
    condition     = startswith(var.data_dir, "/")
    error_message = "The data directory must be an absolute path."
  }
}

variable "port_first" {
  description = "First TCP port the cluster's hubs may use (each hub takes three)."
  type        = number
  default     = 18000

  validation {
    condition     = var.port_first >= 1024 && var.port_first <= 65535 && floor(var.port_first) == var.port_first
    error_message = "The first port must be a whole number from 1024 to 65535."
  }
}

variable "port_last" {
  description = "Last TCP port the cluster's hubs may use."
  type        = number
  default     = 18999

  validation {
    condition     = var.port_last >= 1024 && var.port_last <= 65535 && floor(var.port_last) == var.port_last
    error_message = "The last port must be a whole number from 1024 to 65535."
  }
}

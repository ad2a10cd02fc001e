# These variables mirror the cluster wizard (infra/providers.py): same names, defaults and ranges.

variable "region" {
  description = "Azure location of the cluster, its network and its home storage, such as eastus."
  type        = string
  default     = "eastus"

  validation {
    condition     = can(regex("^[a-z]+[a-z0-9]*$", var.region))
    error_message = "The region must be an Azure location name such as eastus."
  }
}

variable "name" {
  description = "Name of the cluster; also names its resource group, network and storage account."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,28}[a-z0-9]$", var.name))
    error_message = "The cluster name must be 3 to 30 characters: lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "core_machine_type" {
  description = "VM size of the core (system) node pool (hub, proxy and other cluster services)."
  type        = string
  default     = "Standard_D2s_v5"

  validation {
    condition     = length(trimspace(var.core_machine_type)) > 0
    error_message = "The core machine type must not be empty."
  }
}

variable "core_node_count" {
  description = "Number of nodes in the core pool (fixed size)."
  type        = number
  default     = 1

  validation {
    condition     = var.core_node_count >= 1 && var.core_node_count <= 10 && floor(var.core_node_count) == var.core_node_count
    error_message = "The core node count must be a whole number from 1 to 10."
  }
}

variable "user_machine_type" {
  description = "VM size of the user node pool (users' notebook servers)."
  type        = string
  default     = "Standard_E4s_v5"

  validation {
    condition     = length(trimspace(var.user_machine_type)) > 0
    error_message = "The user machine type must not be empty."
  }
}

variable "user_min_nodes" {
  description = "Fewest nodes the user pool's autoscaler keeps (0 lets it scale to zero). At most user_max_nodes."
  type        = number
  default     = 0

  validation {
    condition     = var.user_min_nodes >= 0 && var.user_min_nodes <= 500 && floor(var.user_min_nodes) == var.user_min_nodes
    error_message = "The user pool minimum must be a whole number from 0 to 500."
  }
}

variable "user_max_nodes" {
  description = "Most nodes the user pool's autoscaler may add."
  type        = number
  default     = 10

  validation {
    condition     = var.user_max_nodes >= 1 && var.user_max_nodes <= 500 && floor(var.user_max_nodes) == var.user_max_nodes
    error_message = "The user pool maximum must be a whole number from 1 to 500."
  }
}

variable "home_storage_gb" {
  description = "Size of the users' home storage in GB: the quota of the NFS file share (Premium file shares hold 100 to 102400 GB)."
  type        = number
  default     = 1024

  validation {
    condition     = var.home_storage_gb >= 100 && var.home_storage_gb <= 102400 && floor(var.home_storage_gb) == var.home_storage_gb
    error_message = "The home storage size must be a whole number of GB from 100 to 102400."
  }
}

variable "gpu_enabled" {
  description = "Whether to add an autoscaling GPU node pool (0 to gpu_max_nodes nodes) for users."
  type        = bool
  default     = false
}

variable "gpu_machine_type" {
  description = "VM size of the GPU node pool (an NVIDIA GPU size such as Standard_NC4as_T4_v3)."
  type        = string
  default     = "Standard_NC4as_T4_v3"

  validation {
    condition     = length(trimspace(var.gpu_machine_type)) > 0
    error_message = "The GPU machine type must not be empty."
  }
}

variable "gpu_max_nodes" {
  description = "Most nodes the GPU pool's autoscaler may add (at least 1 when gpu_enabled)."
  type        = number
  default     = 2

  validation {
    condition     = var.gpu_max_nodes >= 0 && var.gpu_max_nodes <= 100 && floor(var.gpu_max_nodes) == var.gpu_max_nodes
    error_message = "The GPU pool maximum must be a whole number from 0 to 100."
  }
}

variable "api_authorized_ranges" {
  description = "IPv4 ranges (CIDR) from which the cluster's Kubernetes API server may be reached; 0.0.0.0/0 (the default) admits any address. The console's own address must be among them."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.api_authorized_ranges) >= 1 && length(var.api_authorized_ranges) <= 20
    error_message = "Give 1 to 20 address ranges; 0.0.0.0/0 admits any address."
  }

  validation {
    condition     = alltrue([for cidr in var.api_authorized_ranges : can(regex("^[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}$", cidr)) && try(cidrsubnet(cidr, 0, 0) == cidr, false)])
    error_message = "Each range must be an IPv4 network in CIDR notation without host bits, such as 203.0.113.0/24."
  }
}

/* acpi: being written */

@echo off
rem easytrain for Windows: sets up .venv on the first run, then opens the wizard.
rem Extra arguments are passed on, e.g.  run_popup.bat train answers\my_lora.json
setlocal
cd /d "%~dp0"

where py >nul 2>nul
if %errorlevel%==0 (
    set "PYTHON=py -3"
) else (
    set "PYTHON=python"
)

if not exist ".venv\Scripts\python.exe" (
    echo [easytrain setup] creating a virtual environment in .venv
    %PYTHON% -m venv .venv
    if errorlevel 1 (
        echo [easytrain setup] could not create .venv: install Python 3.10 or newer from python.org
        exit /b 1
    )
)

rem wizard.py installs easytrain into .venv when needed (CUDA PyTorch when an NVIDIA GPU is found)
".venv\Scripts\python.exe" wizard.py %*
exit /b %errorlevel%
